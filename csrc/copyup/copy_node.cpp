#include "copyup/copy_node.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "copyup/node_error.hpp"
#include "copyup/xattr_io.hpp"

namespace sk::copyup {
namespace {

// O_NOATIME is refused (EPERM) on files the caller does not own without CAP_FOWNER; after the
// first refusal, stop asking.
std::atomic<bool> noatime_refused{false};

UniqueFd open_src(int dirfd, const char* name, int flags) {
    flags |= O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    if (!noatime_refused.load(std::memory_order_relaxed)) {
        int fd = ::openat(dirfd, name, flags | O_NOATIME);
        if (fd >= 0 || errno != EPERM) return UniqueFd(fd);
        noatime_refused = true;
    }
    return UniqueFd(::openat(dirfd, name, flags));
}

// A security module may label every new node and refuse to drop the label; it is not
// something the copy inherited from a directory.
bool is_lsm_label(const std::string& key) { return key.starts_with("security."); }

// Copies every xattr of src to dst; with `strip`, also removes what dst has and src has not.
// Returns whether an access ACL was set (which sets the group bits of the mode).
bool copy_xattrs(const xattr::Node& src, const xattr::Node& dst, bool strip) {
    thread_local std::string names, value;
    if (int r = xattr::list(src, names)) fail(Side::src, -r);
    auto src_names = xattr::split_names(names);
    if (strip) {
        std::string dst_buf;
        if (int r = xattr::list(dst, dst_buf)) fail(Side::dst, -r);
        for (std::string_view n : xattr::split_names(dst_buf)) {
            if (std::find(src_names.begin(), src_names.end(), n) != src_names.end()) continue;
            std::string key(n);
            int r = xattr::remove(dst, key.c_str());
            if (r && r != -ENODATA && !is_lsm_label(key)) fail(Side::dst, -r);
        }
    }
    bool acl = false;
    for (std::string_view n : src_names) {
        std::string key(n);
        int r = xattr::get(src, key.c_str(), value);
        if (r == -ENODATA) continue;  // removed since it was listed
        if (r) fail(Side::src, -r);
        if (int w = xattr::set(dst, key.c_str(), value)) fail(Side::dst, -w);
        acl = acl || key == "system.posix_acl_access";
    }
    return acl;
}

bool owner_differs(const struct stat& st, const NodeCtx& ctx) {
    return !ctx.defaults || st.st_uid != ctx.defaults->uid || st.st_gid != ctx.defaults->gid;
}

// Permission bits to create a node with: the final ones where the umask keeps them, so that
// the chmod can be left out.
mode_t create_mode(const struct stat& st, const NodeCtx& ctx) {
    return ctx.defaults ? (st.st_mode & 0777) : 0600;
}

bool mode_differs(const struct stat& st, const NodeCtx& ctx, bool acl_set) {
    return acl_set || !ctx.defaults ||
           (st.st_mode & 07777) != (st.st_mode & 0777 & ~ctx.defaults->umask);
}

void times_of(const struct stat& st, struct timespec ts[2]) {
    ts[0] = st.st_atim;
    ts[1] = st.st_mtim;
}

// Owner, xattrs, mode and times of a node that cannot be opened (symlink, fifo, device...).
void finish_at(int src_dirfd, const char* src_name, const struct stat& st, int dst_dirfd,
               const char* dst_name, const NodeCtx& ctx) {
    if (owner_differs(st, ctx) &&
        ::fchownat(dst_dirfd, dst_name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
        fail(Side::dst);
    bool acl = copy_xattrs(xattr::Node::at(src_dirfd, src_name),
                           xattr::Node::at(dst_dirfd, dst_name), ctx.strip_inherited);
    // A symlink's mode is fixed (0777) and cannot be set.
    if (!S_ISLNK(st.st_mode) && mode_differs(st, ctx, acl) &&
        ::fchmodat(dst_dirfd, dst_name, st.st_mode & 07777, 0) < 0)
        fail(Side::dst);
    struct timespec ts[2];
    times_of(st, ts);
    if (::utimensat(dst_dirfd, dst_name, ts, AT_SYMLINK_NOFOLLOW) < 0) fail(Side::dst);
}

}  // namespace

std::optional<CreateDefaults> create_defaults() {
    // umask(2) can only be read by setting it, which other threads would see.
    FILE* f = std::fopen("/proc/self/status", "re");
    if (!f) return std::nullopt;
    char line[256];
    std::optional<CreateDefaults> d;
    while (std::fgets(line, sizeof line, f)) {
        unsigned mask;
        if (std::sscanf(line, "Umask: %o", &mask) == 1) {
            d = CreateDefaults{::geteuid(), ::getegid(), static_cast<mode_t>(mask & 0777)};
            break;
        }
    }
    std::fclose(f);
    return d;
}

UniqueFd open_src_file(int dirfd, const char* name) { return open_src(dirfd, name, 0); }

UniqueFd open_src_dir(int dirfd, const char* name) { return open_src(dirfd, name, O_DIRECTORY); }

DirStat stat_dir(int fd) {
    struct statx sx;
    if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) < 0)
        fail(Side::src);
    DirStat d{};
    struct stat& st = d.st;
    st.st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    st.st_ino = sx.stx_ino;
    st.st_mode = sx.stx_mode;
    st.st_nlink = sx.stx_nlink;
    st.st_uid = sx.stx_uid;
    st.st_gid = sx.stx_gid;
    st.st_rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    st.st_size = static_cast<off_t>(sx.stx_size);
    st.st_blksize = sx.stx_blksize;
    st.st_blocks = static_cast<blkcnt_t>(sx.stx_blocks);
    st.st_atim = timespec{sx.stx_atime.tv_sec, sx.stx_atime.tv_nsec};
    st.st_mtim = timespec{sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec};
    st.st_ctim = timespec{sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec};
    d.mount_root = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                   (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
    return d;
}

DataMethod copy_regular(int src_fd, const struct stat& st, int dst_dirfd, const char* dst_name,
                        const NodeCtx& ctx) {
    // Private until the end: the final mode is set after the data and the owner.
    UniqueFd dst(::openat(dst_dirfd, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          create_mode(st, ctx)));
    if (!dst) fail(Side::dst);
    DataMethod method = copy_file_data(src_fd, dst.get(), st, ctx.reflink, *ctx.caps, *ctx.buf);
    if (owner_differs(st, ctx) && ::fchown(dst.get(), st.st_uid, st.st_gid) < 0) fail(Side::dst);
    bool acl = copy_xattrs(xattr::Node::of_fd(src_fd), xattr::Node::of_fd(dst.get()),
                           ctx.strip_inherited);
    if (mode_differs(st, ctx, acl) && ::fchmod(dst.get(), st.st_mode & 07777) < 0) fail(Side::dst);
    struct timespec ts[2];
    times_of(st, ts);
    if (::futimens(dst.get(), ts) < 0) fail(Side::dst);
    if (ctx.dst_st && ::fstat(dst.get(), ctx.dst_st) < 0) fail(Side::dst);
    // Errors of delayed writes (NFS, quota) show up at close.
    if (::close(dst.release()) < 0 && errno != EINTR) fail(Side::dst);
    return method;
}

void copy_symlink(int src_dirfd, const char* src_name, const struct stat& st, int dst_dirfd,
                  const char* dst_name, const NodeCtx& ctx) {
    std::string target(st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 256, '\0');
    for (;;) {
        ssize_t n = ::readlinkat(src_dirfd, src_name, target.data(), target.size());
        if (n < 0) fail(Side::src);
        if (static_cast<size_t>(n) < target.size()) {
            target.resize(static_cast<size_t>(n));
            break;
        }
        target.resize(target.size() * 2);  // grew since it was stat'ed
    }
    if (::symlinkat(target.c_str(), dst_dirfd, dst_name) < 0) fail(Side::dst);
    finish_at(src_dirfd, src_name, st, dst_dirfd, dst_name, ctx);
}

void copy_special(int src_dirfd, const char* src_name, const struct stat& st, int dst_dirfd,
                  const char* dst_name, const NodeCtx& ctx) {
    mode_t mode = (st.st_mode & S_IFMT) | create_mode(st, ctx);
    if (::mknodat(dst_dirfd, dst_name, mode, st.st_rdev) < 0)
        fail(Side::dst);
    finish_at(src_dirfd, src_name, st, dst_dirfd, dst_name, ctx);
}

UniqueFd make_dir(const struct stat& st, int dst_dirfd, const char* dst_name, const NodeCtx& ctx) {
    // Private and writable until finish_dir, whatever the final mode.
    if (::mkdirat(dst_dirfd, dst_name, 0700) < 0) fail(Side::dst);
    UniqueFd dst(::openat(dst_dirfd, dst_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dst) fail(Side::dst);
    if (owner_differs(st, ctx) && ::fchown(dst.get(), st.st_uid, st.st_gid) < 0) fail(Side::dst);
    if (ctx.strip_inherited) {
        // A setgid parent outside the copy passed on its setgid bit, which would hand the
        // directory's group to everything created inside; the final mode comes with finish_dir.
        if (::fchmod(dst.get(), 0700) < 0) fail(Side::dst);
        // An inherited default ACL would be passed on to everything copied inside; the
        // source's own xattrs come with finish_dir.
        std::string buf;
        xattr::Node node = xattr::Node::of_fd(dst.get());
        if (int r = xattr::list(node, buf)) fail(Side::dst, -r);
        for (std::string_view n : xattr::split_names(buf)) {
            std::string key(n);
            int r = xattr::remove(node, key.c_str());
            if (r && r != -ENODATA && !is_lsm_label(key)) fail(Side::dst, -r);
        }
    }
    return dst;
}

void finish_dir(int src_fd, const struct stat& st, int dst_fd) {
    copy_xattrs(xattr::Node::of_fd(src_fd), xattr::Node::of_fd(dst_fd), false);
    if (::fchmod(dst_fd, st.st_mode & 07777) < 0) fail(Side::dst);
    struct timespec ts[2];
    times_of(st, ts);
    if (::futimens(dst_fd, ts) < 0) fail(Side::dst);
}

}  // namespace sk::copyup
