// Errors raised by native code.
//
// Native code runs with the GIL released, so it cannot build Python exceptions directly. It
// throws these C++ types instead; each extension module (csrc/modules/{native,archive,fuse}.cpp)
// registers the translators of common/translate.hpp, which turn them into Python exceptions.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace sk {

// A failed system call on a path: becomes OSError(errno, strerror, path[, path2]), so Python
// sees FileNotFoundError, PermissionError, ... with .filename set. path and path2 name what
// failed: a file (or a container's step, "container: chdir /x", and an overlay mount with the
// kernel's reason, as the stub documents for those two). A failure with more to say that
// callers act on is a KindError, whose message says it.
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

// A failure with a meaning of its own, beyond its errno, that callers act on: a thin device
// that already exists, a pool out of space. `kind` names the meaning (a static string the
// area defines, e.g. thin/error.hpp), err is the errno it stands for, message says it in
// words. Becomes storagekit._native.EngineError: an OSError(err, message, path) with .kind,
// from which Python picks its exception class, never from the text.
struct KindError : SysError {
    const char* kind;
    std::string message;

    KindError(const char* k, int e, std::string msg, std::string p = {})
        : SysError(e, std::move(p)), kind(k), message(std::move(msg)) {
        what_ = path.empty() ? message : path + ": " + message;
    }
};

// A malformed or hostile archive (bad header, path escaping the root, bad whiteout, ...).
struct ArchiveError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A caller passed something the function cannot accept (unknown dialect, ...): ValueError.
struct ValueErr : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

}  // namespace sk
