#include "thin/message.hpp"

#include <cerrno>
#include <charconv>
#include <sstream>
#include <vector>

#include "common/syserror.hpp"
#include "thin/disk_format.hpp"

namespace sk::thin {
namespace {

uint64_t number(const std::string& s, const std::string& msg, uint64_t max) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > max)
        throw SysError(EINVAL, msg);
    return v;
}

}  // namespace

Message parse_message(const std::string& msg) {
    std::istringstream in(msg);
    std::vector<std::string> w;
    for (std::string t; in >> t;) w.push_back(t);
    if (w.empty()) throw SysError(EINVAL, msg);
    const std::string& verb = w[0];
    auto args = [&](size_t n) {
        if (w.size() != n + 1) throw SysError(EINVAL, msg);
    };
    Message m{};
    if (verb == "create_thin") {
        args(1);
        m = {Message::create_thin, number(w[1], msg, kMaxDeviceId), 0};
    } else if (verb == "create_snap") {
        args(2);
        m = {Message::create_snap, number(w[1], msg, kMaxDeviceId), number(w[2], msg, kMaxDeviceId)};
    } else if (verb == "delete") {
        args(1);
        m = {Message::delete_device, number(w[1], msg, kMaxDeviceId), 0};
    } else if (verb == "set_transaction_id") {
        args(2);
        m = {Message::set_transaction_id, number(w[1], msg, UINT64_MAX), number(w[2], msg, UINT64_MAX)};
    } else if (verb == "reserve_metadata_snap") {
        args(0);
        m.kind = Message::reserve_metadata_snap;
    } else if (verb == "release_metadata_snap") {
        args(0);
        m.kind = Message::release_metadata_snap;
    } else {
        throw SysError(EINVAL, msg);
    }
    return m;
}

}  // namespace sk::thin
