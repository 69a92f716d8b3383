// The copy primitives know which side of a copy failed but not the paths the caller wants in
// its error, so they throw NodeError and the caller turns it into sk::SysError.
#pragma once

#include <cerrno>
#include <string>

#include "common/syserror.hpp"

namespace sk::copyup {

enum class Side { src, dst, both };

struct NodeError {
    int err;
    Side side;
};

[[noreturn]] inline void fail(Side side, int err = errno) { throw NodeError{err, side}; }

inline SysError to_sys_error(const NodeError& e, const std::string& src, const std::string& dst) {
    switch (e.side) {
        case Side::src: return SysError(e.err, src);
        case Side::dst: return SysError(e.err, dst);
        case Side::both: break;
    }
    return SysError(e.err, src, dst);
}

}  // namespace sk::copyup
