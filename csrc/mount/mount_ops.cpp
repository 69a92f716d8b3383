// mount(2), umount2(2), bind mounts and unmounting whole trees.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "mount/mount.hpp"

namespace sk {
namespace {

// A mount source worth naming in an error: a path (bind source, device), not "tmpfs"/"none".
std::string source_path(const std::string& source) {
    return source.starts_with('/') ? source : std::string();
}

// Fallback for kernels without the new mount API (< 5.12): bind, then remount read-only.
// A MS_REMOUNT|MS_BIND sets every per-mount flag at once, so the inherited ones must be
// passed again or the bind would silently lose nosuid, nodev, ...
void bind_readonly_legacy(const std::string& source, const std::string& target, bool recursive) {
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | (recursive ? MS_REC : 0),
                nullptr) != 0)
        throw_errno(target, source);
    struct statvfs st {};
    unsigned long keep = 0;
    if (::statvfs(target.c_str(), &st) == 0) {
        if (st.f_flag & ST_NOSUID) keep |= MS_NOSUID;
        if (st.f_flag & ST_NODEV) keep |= MS_NODEV;
        if (st.f_flag & ST_NOEXEC) keep |= MS_NOEXEC;
        if (st.f_flag & ST_NOATIME) keep |= MS_NOATIME;
        if (st.f_flag & ST_NODIRATIME) keep |= MS_NODIRATIME;
        if (st.f_flag & ST_RELATIME) keep |= MS_RELATIME;
    }
    if (::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | keep,
                nullptr) != 0) {
        int err = errno;
        ::umount2(target.c_str(), MNT_DETACH);
        throw SysError(err, target, source);
    }
}

bool same_mounts(const std::vector<MountEntry>& a, const std::vector<MountEntry>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](const MountEntry& x, const MountEntry& y) { return x.id == y.id; });
}

}  // namespace

void mount_fs(const std::string& source, const std::string& target, const char* fstype,
              unsigned long flags, const char* data) {
    if (::mount(source.c_str(), target.c_str(), fstype, flags, data) != 0)
        throw_errno(target, source_path(source));
}

void umount_fs(const std::string& target, int flags) {
    if (::umount2(target.c_str(), flags) != 0) throw_errno(target);
}

void bind_mount(const std::string& source, const std::string& target, bool readonly,
                bool recursive) {
    unsigned rec = recursive ? AT_RECURSIVE : 0;
    if (!readonly) {
        if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | (recursive ? MS_REC : 0),
                    nullptr) != 0)
            throw_errno(target, source);
        return;
    }
    // Clone the tree detached, make it read-only, then attach it: nobody ever sees a writable
    // bind, and mount_setattr changes only the read-only bit. Closing the fd of a clone that
    // was never attached dissolves it, so a failure leaves nothing behind.
    UniqueFd tree(::open_tree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec));
    if (!tree) {
        if (errno == ENOSYS) return bind_readonly_legacy(source, target, recursive);
        throw_errno(target, source);
    }
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | rec, &attr, sizeof attr) != 0)
        throw_errno(target, source);
    if (::move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
        throw_errno(target, source);
}

int umount_tree(const std::string& path, bool detach) {
    std::string resolved = resolve_mount_path(path, true);
    // The targets come from the table, but a directory on the way could have been swapped for
    // a symlink since: never follow one at the end.
    int flags = UMOUNT_NOFOLLOW | (detach ? MNT_DETACH : 0);
    int done = 0;
    // Each round unmounts what it can reach. A mount can be unreachable for a round: covered by
    // a later mount on an ancestor directory (its path lookup ends in the cover: EINVAL or
    // ENOENT), or busy with a child that was covered (EBUSY). Rounds go on while the table
    // changes; when a round changes nothing, what is left stays, and its error is raised.
    std::vector<MountEntry> left = mounts_under(read_mount_table(), resolved);
    while (!left.empty()) {
        std::optional<SysError> first_error;
        for (const MountEntry& m : left) {
            if (::umount2(m.target.c_str(), flags) == 0) {
                ++done;
                continue;
            }
            int err = errno;
            if (err != EINVAL && err != ENOENT && err != EBUSY) throw SysError(err, m.target);
            if (!first_error) first_error.emplace(err, m.target);
        }
        std::vector<MountEntry> now = mounts_under(read_mount_table(), resolved);
        if (first_error && same_mounts(now, left)) throw *first_error;
        left = std::move(now);
    }
    return done;
}

}  // namespace sk
