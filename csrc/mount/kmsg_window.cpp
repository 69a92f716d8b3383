// Reading new /dev/kmsg records: one record per read(), "<prio>,<seq>,<usec>,<flags>;<text>\n"
// followed by optional " KEY=value" continuation lines.
#include "mount/kmsg_window.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace sk {
namespace {

constexpr int kLevelErr = 3;
constexpr int kLevelWarning = 4;

void append(std::string& list, const std::string& line) {
    if (!list.empty()) list += "; ";
    list += line;
}

}  // namespace

KmsgWindow::KmsgWindow() : fd_(::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)) {
    if (fd_ && ::lseek(fd_.get(), 0, SEEK_END) < 0) fd_.reset();
}

std::string KmsgWindow::take(const std::string& prefix) {
    std::string errors, warnings;
    if (!fd_) return errors;
    char buf[8192];
    // Bounded: the ring buffer can keep filling while we read.
    for (int records = 0; records < 1024; ++records) {
        ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n < 0 && errno == EPIPE) continue;  // records were overwritten; reading resumes
        if (n <= 0) break;
        std::string record(buf, static_cast<size_t>(n));
        size_t semi = record.find(';');
        if (semi == std::string::npos) continue;
        int level = std::atoi(record.c_str()) & 7;  // facility in the upper bits
        std::string text = record.substr(semi + 1, record.find('\n', semi) - semi - 1);
        if (!text.starts_with(prefix)) continue;
        if (level <= kLevelErr)
            append(errors, text);
        else if (level == kLevelWarning)
            append(warnings, text);
    }
    return errors.empty() ? warnings : errors;
}

}  // namespace sk
