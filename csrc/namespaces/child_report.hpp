// How the container's child tells the parent why it did not get to exec: one fixed-size
// record on a close-on-exec pipe. It is smaller than PIPE_BUF, so it arrives whole; EOF
// without a record means execve succeeded (or the child was killed before it could say).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace sk::ns {

struct ChildFailure {
    int err = 0;
    char step[252] = {};  // NUL-terminated, truncated if longer
};
static_assert(sizeof(ChildFailure) <= 256);

// Write the failure and exit. Only system calls: safe in the cloned child.
[[noreturn]] inline void report_failure(int report_fd, int err, const char* step) {
    ChildFailure f;
    f.err = err;
    std::size_t i = 0;
    for (; step && step[i] && i + 1 < sizeof f.step; ++i) f.step[i] = step[i];
    f.step[i] = '\0';
    ssize_t n;
    do {
        n = ::write(report_fd, &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    ::_exit(127);
}

}  // namespace sk::ns
