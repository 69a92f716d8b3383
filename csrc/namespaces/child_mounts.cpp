// The container's filesystem, set up in the child's private mount namespace.
//
// The mount points under the rootfs are reached relative to the working directory (the
// rootfs) and checked not to be symlinks: a hostile image's "proc -> /etc" must not turn a
// mount into one over a host directory. Paths are resolved before pivot_root because procfs
// and sysfs can only be mounted in a user namespace while a fully visible instance of each is
// still in the mount namespace (the host's, under the old root).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "namespaces/child_steps.hpp"

namespace sk::ns {
namespace {

// An existing directory (not a symlink to one), or a new one.
bool ensure_dir(const char* name, mode_t mode) {
    struct stat st;
    if (::lstat(name, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return true;
        errno = ENOTDIR;
        return false;
    }
    if (errno != ENOENT) return false;
    return ::mkdir(name, mode) == 0;
}

// A bind remount may not clear the flags the mount was created with when they are locked (as
// they are for a mount copied into a user namespace), so the current ones are passed back.
unsigned long current_mount_flags(const struct statfs& st) {
    unsigned long flags = 0;
    if (st.f_flags & ST_NOSUID) flags |= MS_NOSUID;
    if (st.f_flags & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
    if (st.f_flags & ST_NOATIME) flags |= MS_NOATIME;
    if (st.f_flags & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (st.f_flags & ST_RELATIME) flags |= MS_RELATIME;
    if (!(flags & (MS_NOATIME | MS_RELATIME))) flags |= MS_STRICTATIME;
    return flags;
}

}  // namespace

const char* enter_rootfs(const ChildPlan& plan) {
    // Private, not slave: nothing mounted on the host later shows up inside, and nothing the
    // container mounts propagates out.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return "make / private";
    // pivot_root needs the new root to be a mount point; recursive so that mounts the caller
    // made under the rootfs (volumes) come along.
    const char* root = plan.rootfs.c_str();
    if (::mount(root, root, nullptr, MS_BIND | MS_REC, nullptr) != 0) return "bind rootfs";
    if (plan.user_namespace) {
        // The kernel makes nodev only the filesystems mounted inside a user namespace; this
        // bind of a host mount would keep the device nodes an image ships openable (a block
        // device node in the image, owned by root: the host's disk, read-write).
        struct mount_attr attr {};
        attr.attr_set = MOUNT_ATTR_NODEV;
        if (::mount_setattr(AT_FDCWD, root, AT_RECURSIVE, &attr, sizeof attr) != 0)
            return "make rootfs nodev";
    }
    if (::chdir(root) != 0) return "chdir rootfs";
    return nullptr;
}

const char* mount_container_fs() {
    if (!ensure_dir("proc", 0555)) return "mkdir /proc";
    if (::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return "mount /proc";

    if (!ensure_dir("dev", 0755)) return "mkdir /dev";
    if (const char* step = mount_dev()) return step;
    // Back up from /dev, not through the rootfs's host path, which the namespace's root may
    // not be allowed to walk.
    if (::chdir("..") != 0) return "chdir rootfs";

    // Optional: refused for a user namespace sharing the host's network namespace, and an
    // image may have no /sys.
    if (ensure_dir("sys", 0555))
        (void)::mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      nullptr);
    return nullptr;
}

const char* enter_container_root(const ChildPlan& plan) {
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // removes it (and every host mount under it) from this mount namespace.
    if (::syscall(SYS_pivot_root, ".", ".") != 0) return "pivot_root";
    if (::umount2(".", MNT_DETACH) != 0) return "detach old root";
    if (::chdir("/") != 0) return "chdir /";
    if (plan.readonly_rootfs) {
        struct statfs st;
        if (::statfs("/", &st) != 0) return "statfs /";
        unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | current_mount_flags(st);
        if (::mount(nullptr, "/", nullptr, flags, nullptr) != 0) return "remount / read-only";
    }
    return nullptr;
}

}  // namespace sk::ns
