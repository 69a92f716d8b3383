// The FUSE low-level operations that serve a pool's thin devices as regular files in one flat
// directory: "<id>" of the device's size. Reads, writes, fsync and fallocate go straight to
// the pool from libfuse's worker threads.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <cstdint>
#include <ctime>

#include "thin/device_files.hpp"
#include "thin/pool.hpp"

namespace sk::thin {

struct FuseContext {
    Pool& pool;
    DeviceFiles& files;
    uint64_t block_bytes;
    bool unmaps_on_discard;  // false for a pool opened with ignore_discard
    struct timespec started;
};

// The root directory's inode is FUSE_ROOT_ID (1); device `id` is inode id + 2.
inline constexpr fuse_ino_t kFirstDeviceIno = 2;

const fuse_lowlevel_ops& thin_fuse_ops();

}  // namespace sk::thin
