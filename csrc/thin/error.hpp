// The thin engine's errors that callers act on, by kind. Each kind stands for one errno; the
// message says the rest in words. Python sees storagekit._native.EngineError with .kind set
// to the kind's name, and storagekit/engines/thin/errors.py maps each name straight to its
// exception class (DeviceExists, PoolFull, ...). A failed system call on a file stays a
// plain SysError naming the file.
#pragma once

#include <cerrno>
#include <string>

#include "common/syserror.hpp"

namespace sk::thin {

enum class Fault {
    bad_message,   // EINVAL   not a pool message: unknown verb, wrong arguments, bad number
    bad_argument,  // EINVAL   refused as given: a wrong current transaction id, no metadata
                   //          snapshot to release, a range that overflows, a data file that
                   //          is neither a regular file nor a block device
    device_exists,  // EEXIST  the thin device id is taken
    no_device,      // ENODATA no thin device of that id
    no_origin,      // ENODATA create_snap's origin does not exist
    no_space,       // ENOSPC  no free data block, or the metadata space is exhausted
    read_only,      // EROFS   the pool is read-only (opened so, or its metadata needs a check)
    busy,           // EBUSY   a metadata snapshot is held already
    locked,         // EBUSY   another process has the pool open
    closed,         // EBADF   the pool was closed
    damaged,        // EIO     metadata that fails its checks
    shown,          // EEXIST  (ThinFuse) the device's file is shown already
    not_shown,      // ENOENT  (ThinFuse) the device's file is not shown
    mount_failed,   // EIO     (ThinFuse) libfuse could not mount
};

constexpr const char* fault_name(Fault f) {
    switch (f) {
        case Fault::bad_message: return "bad_message";
        case Fault::bad_argument: return "bad_argument";
        case Fault::device_exists: return "device_exists";
        case Fault::no_device: return "no_device";
        case Fault::no_origin: return "no_origin";
        case Fault::no_space: return "no_space";
        case Fault::read_only: return "read_only";
        case Fault::busy: return "busy";
        case Fault::locked: return "locked";
        case Fault::closed: return "closed";
        case Fault::damaged: return "damaged";
        case Fault::shown: return "shown";
        case Fault::not_shown: return "not_shown";
        case Fault::mount_failed: return "mount_failed";
    }
    return "unknown";
}

constexpr int fault_errno(Fault f) {
    switch (f) {
        case Fault::bad_message:
        case Fault::bad_argument: return EINVAL;
        case Fault::device_exists:
        case Fault::shown: return EEXIST;
        case Fault::no_device:
        case Fault::no_origin: return ENODATA;
        case Fault::no_space: return ENOSPC;
        case Fault::read_only: return EROFS;
        case Fault::busy:
        case Fault::locked: return EBUSY;
        case Fault::closed: return EBADF;
        case Fault::not_shown: return ENOENT;
        case Fault::damaged:
        case Fault::mount_failed: return EIO;
    }
    return EIO;
}

// path: the file involved, if one is (the metadata or data file, the mount point).
struct Error : KindError {
    Fault fault;
    Error(Fault f, std::string message, std::string path = {})
        : KindError(fault_name(f), fault_errno(f), std::move(message), std::move(path)),
          fault(f) {}
};

}  // namespace sk::thin
