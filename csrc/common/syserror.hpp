// Errors raised by native code.
//
// Native code runs with the GIL released, so it cannot build Python exceptions directly. It
// throws these C++ types instead; module.cpp registers translators that turn them into
// OSError (with errno, strerror and the path or paths involved) and storagekit._native.ArchiveError.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace sk {

// A failed system call on a path: becomes OSError(errno, strerror, path[, path2]), so Python
// sees FileNotFoundError, PermissionError, ... with .filename set.
struct SysError : std::exception {
    int err;
    std::string path;
    std::string path2;
    std::string what_;

    SysError(int e, std::string p, std::string p2 = {})
        : err(e), path(std::move(p)), path2(std::move(p2)) {
        what_ = path + ": errno " + std::to_string(err);
    }
    const char* what() const noexcept override { return what_.c_str(); }
};

// Throw SysError for the current errno.
[[noreturn]] inline void throw_errno(const std::string& path, const std::string& path2 = {}) {
    throw SysError(errno, path, path2);
}

// A malformed or hostile archive (bad header, path escaping the root, bad whiteout, ...).
struct ArchiveError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A caller passed something the function cannot accept (unknown dialect, ...): ValueError.
struct ValueErr : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

}  // namespace sk
