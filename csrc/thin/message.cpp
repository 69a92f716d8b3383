#include "thin/message.hpp"

#include <cerrno>
#include <charconv>
#include <sstream>
#include <vector>

#include "common/syserror.hpp"
#include "thin/disk_format.hpp"
#include "thin/error.hpp"

namespace sk::thin {
namespace {

[[noreturn]] void refuse(const std::string& why) {
    throw Error(Fault::bad_message, "not a pool message: " + why);
}

uint64_t number(const std::string& s, uint64_t max, const char* what) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > max)
        refuse("'" + s + "' is not " + what + " (0.." + std::to_string(max) + ")");
    return v;
}

uint64_t device_id(const std::string& s) { return number(s, kMaxDeviceId, "a thin device id"); }
uint64_t transaction_id(const std::string& s) { return number(s, UINT64_MAX, "a transaction id"); }

}  // namespace

Message parse_message(const std::string& msg) {
    std::istringstream in(msg);
    std::vector<std::string> w;
    for (std::string t; in >> t;) w.push_back(t);
    if (w.empty()) refuse("it is empty");
    const std::string& verb = w[0];
    auto args = [&](size_t n) {
        if (w.size() != n + 1)
            refuse(verb + " takes " + std::to_string(n) + (n == 1 ? " argument" : " arguments"));
    };
    Message m{};
    if (verb == "create_thin") {
        args(1);
        m = {Message::create_thin, device_id(w[1]), 0};
    } else if (verb == "create_snap") {
        args(2);
        m = {Message::create_snap, device_id(w[1]), device_id(w[2])};
    } else if (verb == "delete") {
        args(1);
        m = {Message::delete_device, device_id(w[1]), 0};
    } else if (verb == "set_transaction_id") {
        args(2);
        m = {Message::set_transaction_id, transaction_id(w[1]), transaction_id(w[2])};
    } else if (verb == "reserve_metadata_snap") {
        args(0);
        m.kind = Message::reserve_metadata_snap;
    } else if (verb == "release_metadata_snap") {
        args(0);
        m.kind = Message::release_metadata_snap;
    } else {
        refuse("unknown verb '" + verb + "'");
    }
    return m;
}

}  // namespace sk::thin
