#include "archive/root_dirs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>

#include "common/in_root.hpp"
#include "common/syserror.hpp"

namespace sk {

std::string RootDirs::label_of(std::string_view path) const {
    std::string p = label_;
    if (!path.empty()) {
        p += '/';
        p += path;
    }
    return p;
}

RootDirs::RootDirs(int rootfd, std::string label) : root_(rootfd), label_(std::move(label)) {
    root_dir_ = describe(rootfd, "");
}

RootDirs::Dir RootDirs::describe(int fd, const std::string& dir) const {
    struct stat st;
    if (fstat(fd, &st) < 0) throw_errno(label_of(dir));
    Dir d;
    d.fd = fd;
    d.child_gid = (st.st_mode & S_ISGID) ? st.st_gid : getegid();
    d.plain_mode = fgetxattr(fd, "system.posix_acl_default", nullptr, 0) < 0 &&
                   (errno == ENODATA || errno == ENOTSUP);
    return d;
}

const RootDirs::Dir& RootDirs::get(std::string_view dir, bool create) {
    if (dir.empty()) return root_dir_;
    if (cached_ && dir == cached_path_) return cached_dir_;
    std::string d(dir);
    int fd = open_dir(d, create);
    if (fd < 0) return none_;
    cached_.reset(fd);
    cached_dir_ = describe(fd, d);
    cached_path_ = std::move(d);
    return cached_dir_;
}

void RootDirs::forget(std::string_view path) {
    if (!cached_) return;
    std::string_view c = cached_path_;
    if (c.starts_with(path) && (c.size() == path.size() || c[path.size()] == '/' || path.empty()))
        cached_.reset();
}

void RootDirs::not_a_dir(const std::string& dir) const {
    if (errno == ENOTDIR) throw ArchiveError("parent '" + dir + "' is not a directory");
    if (errno == ELOOP) throw ArchiveError("parent '" + dir + "' is a symlink loop");
    throw_errno(label_of(dir));
}

int RootDirs::open_dir(const std::string& dir, bool create) {
    int fd = open_in_root(root_, dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) return fd;
    if (errno == ENOENT) return create ? create_dirs(dir) : -1;
    not_a_dir(dir);
}

int RootDirs::create_dirs(const std::string& dir) {
    // Find the deepest existing ancestor (resolved inside the root), then create the rest
    // below it. Fresh directories hold no symlinks, so they are entered with O_NOFOLLOW.
    UniqueFd cur;
    int cur_fd = root_;
    std::size_t pos = 0;
    while (pos <= dir.size()) {
        std::size_t end = dir.find('/', pos);
        if (end == std::string::npos) end = dir.size();
        std::string prefix = dir.substr(0, end);
        int fd = open_in_root(root_, prefix.c_str(), O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            if (errno == ENOENT) break;
            not_a_dir(prefix);
        }
        cur.reset(fd);
        cur_fd = fd;
        pos = end + 1;
    }
    while (pos <= dir.size()) {
        std::size_t end = dir.find('/', pos);
        if (end == std::string::npos) end = dir.size();
        std::string name = dir.substr(pos, end - pos);
        std::string prefix = dir.substr(0, end);
        if (mkdirat(cur_fd, name.c_str(), 0755) < 0 && errno != EEXIST)
            throw_errno(label_of(prefix));
        int fd = openat(cur_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ELOOP || errno == ENOTDIR) {
                struct stat st;
                bool link = fstatat(cur_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                            S_ISLNK(st.st_mode);
                throw ArchiveError("parent '" + prefix + "' is " +
                                   (link ? "a symlink to nowhere" : "not a directory"));
            }
            throw_errno(label_of(prefix));
        }
        cur.reset(fd);
        cur_fd = fd;
        pos = end + 1;
    }
    return cur.release();
}

}  // namespace sk
