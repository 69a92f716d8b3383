#include "changes/node_stat.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>

namespace sk::changes {

int stat_node(int dirfd, const char* name, NodeStat& out) {
    struct statx sx;
    int flags = AT_SYMLINK_NOFOLLOW | (name[0] == '\0' ? AT_EMPTY_PATH : 0);
    if (::statx(dirfd, name, flags, STATX_BASIC_STATS, &sx) < 0) return errno;
    out.mode = sx.stx_mode;
    out.uid = sx.stx_uid;
    out.gid = sx.stx_gid;
    out.rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    out.dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    out.ino = sx.stx_ino;
    out.nlink = sx.stx_nlink;
    out.size = static_cast<int64_t>(sx.stx_size);
    out.mtime = timespec{sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec};
    out.mount_root = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                     (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
    return 0;
}

}  // namespace sk::changes
