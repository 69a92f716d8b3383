// The stat fields a change scan compares, taken with statx so that mount points show up
// (STATX_ATTR_MOUNT_ROOT sees bind mounts of the same filesystem, which st_dev does not).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>

namespace sk::changes {

struct NodeStat {
    mode_t mode;
    uid_t uid;
    gid_t gid;
    dev_t rdev;
    dev_t dev;
    ino_t ino;
    uint64_t nlink;
    int64_t size;
    struct timespec mtime;
    bool mount_root;
};

// stat of `name` in dirfd (not followed if a symlink), or of dirfd itself when name is "".
// Returns 0 or an errno value.
int stat_node(int dirfd, const char* name, NodeStat& out);

}  // namespace sk::changes
