// Reading and writing whiteout and opaque markers in one directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::whiteout {
namespace {

std::string join(const std::string& label, std::string_view name) {
    std::string p = label;
    p += '/';
    p += name;
    return p;
}

void check_entry_name(const std::string& name, Dialect d) {
    bool bad = name.empty() || name == "." || name == ".." ||
               name.find('/') != std::string::npos || name.find('\0') != std::string::npos;
    if (bad) throw ValueErr("cannot record a whiteout of '" + name + "': not a file name");
    // ".wh.<name>" of a name that itself starts with ".wh." is not a whiteout to aufs.
    if (d == Dialect::oci && name.starts_with(kPrefix))
        throw ValueErr("cannot record a whiteout of '" + name + "' in the oci dialect");
}

// An empty regular file `name` with exactly `mode`, replacing whatever had that name.
void put_empty_file(int dirfd, const std::string& name, mode_t mode, const std::string& label) {
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd fd(openat(dirfd, name.c_str(), flags, mode));
    if (!fd && errno == EEXIST) {
        remove_tree_at(dirfd, name, label);
        fd.reset(openat(dirfd, name.c_str(), flags, mode));
    }
    if (!fd) throw_errno(join(label, name));
    if (fchmod(fd.get(), mode) < 0) throw_errno(join(label, name));
}

bool is_overlay_whiteout(const struct stat& st) {
    return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

}  // namespace

bool is_whiteout_stat(std::string_view name, const struct stat& st, Dialect d) {
    switch (d) {
        case Dialect::none: return false;
        case Dialect::oci:
            try {
                return classify(name) == NameKind::whiteout;
            } catch (const ArchiveError&) {
                return false;
            }
        case Dialect::overlay:
        case Dialect::overlay_user: return is_overlay_whiteout(st);
    }
    return false;
}

bool is_whiteout_at(int dirfd, const std::string& name, Dialect d, const std::string& label) {
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return false;
        throw_errno(join(label, name));
    }
    return is_whiteout_stat(name, st, d);
}

bool is_opaque_fd(int dirfd, Dialect d, const std::string& label) {
    if (d == Dialect::none) return false;
    if (d == Dialect::oci) {
        struct stat st;
        if (fstatat(dirfd, std::string(kOpaque).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
            return true;
        if (errno == ENOENT) return false;
        throw_errno(join(label, kOpaque));
    }
    char value[2];
    ssize_t n = fgetxattr(dirfd, opaque_xattr(d), value, sizeof value);
    if (n < 0) {
        if (errno == ENODATA || errno == ENOTSUP || errno == ERANGE) return false;
        throw_errno(label);
    }
    return n == 1 && value[0] == 'y';
}

void make_whiteout_at(int dirfd, const std::string& name, Dialect d, const std::string& label) {
    check_entry_name(name, d);
    switch (d) {
        case Dialect::none: remove_tree_at(dirfd, name, label); return;
        case Dialect::oci: put_empty_file(dirfd, std::string(kPrefix) + name, 0600, label); return;
        case Dialect::overlay:
        case Dialect::overlay_user: break;
    }
    // The kernel's own whiteouts are char 0/0 with mode 0; do the same.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (mknodat(dirfd, name.c_str(), S_IFCHR, makedev(0, 0)) == 0) return;
        if (errno != EEXIST || attempt) break;
        struct stat st;
        if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && is_overlay_whiteout(st))
            return;
        remove_tree_at(dirfd, name, label);
    }
    throw_errno(join(label, name));
}

void set_opaque_fd(int dirfd, Dialect d, const std::string& label) {
    switch (d) {
        case Dialect::none: empty_dir_at(dirfd, label); return;
        case Dialect::oci: {
            struct stat st;
            std::string n(kOpaque);
            if (fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                return;
            put_empty_file(dirfd, n, 0600, label);
            return;
        }
        case Dialect::overlay:
        case Dialect::overlay_user:
            if (fsetxattr(dirfd, opaque_xattr(d), "y", 1, 0) < 0) throw_errno(label);
            return;
    }
}

void clear_opaque_fd(int dirfd, Dialect d, const std::string& label) {
    switch (d) {
        case Dialect::none: return;
        case Dialect::oci: remove_tree_at(dirfd, std::string(kOpaque), label); return;
        case Dialect::overlay:
        case Dialect::overlay_user:
            if (fremovexattr(dirfd, opaque_xattr(d)) < 0 && errno != ENODATA && errno != ENOTSUP)
                throw_errno(label);
            return;
    }
}

}  // namespace sk::whiteout
