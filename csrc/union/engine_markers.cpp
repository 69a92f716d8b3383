// aufs markers in the writable branch: whiteouts ".wh.<name>" and opaque directories
// ".wh..wh..opq", both hard links of the branch's whiteout base ".wh..wh.aufs" as aufs makes
// them (a file of their own once the base has too many links).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "common/dir_entries.hpp"
#include "common/remove_tree.hpp"
#include "union/aufs_names.hpp"
#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {
namespace {

std::string wh_name(const std::string& name) { return std::string(whiteout::kPrefix) + name; }

UniqueFd open_subdir(int dirfd, const std::string& name) {
    return UniqueFd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

}  // namespace

int Engine::make_whiteout(int dirfd, const std::string& name) {
    std::string w = wh_name(name);
    if (base_ok_ && ::linkat(br_[0].root.get(), kWhiteoutBase, dirfd, w.c_str(), 0) == 0) return 0;
    if (errno == EEXIST) return 0;
    // Too many links to the base (or it is gone): an empty file of its own does the same.
    UniqueFd fd(::openat(dirfd, w.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    return fd ? 0 : errno;
}

int Engine::remove_whiteout(int dirfd, const std::string& name) {
    std::string w = wh_name(name);
    if (::unlinkat(dirfd, w.c_str(), 0) < 0 && errno != ENOENT) return errno;
    return 0;
}

bool Engine::has_whiteout(int dirfd, const std::string& name) const {
    struct stat st;
    return ::fstatat(dirfd, wh_name(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int Engine::make_opaque(int dirfd) {
    std::string o(whiteout::kOpaque);
    if (base_ok_ && ::linkat(br_[0].root.get(), kWhiteoutBase, dirfd, o.c_str(), 0) == 0) return 0;
    if (errno == EEXIST) return 0;
    UniqueFd fd(::openat(dirfd, o.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    return fd ? 0 : errno;
}

namespace {

// Deletes the markers (".wh.*" entries) of an upper directory.
int remove_markers(int dirfd, const std::vector<std::string>& markers) {
    for (const auto& m : markers)
        if (int e = with_errno([&] { remove_tree_at(dirfd, m, "directory"); })) return e;
    return 0;
}

}  // namespace

int Engine::clear_markers(int dirfd) {
    if (::lseek(dirfd, 0, SEEK_SET) < 0) return errno;
    std::vector<std::string> markers;
    bool other = false;
    int err = for_each_entry(dirfd, [&](std::string_view nm, unsigned char, uint64_t) {
        if (!nm.starts_with(whiteout::kPrefix)) {
            other = true;
            return false;
        }
        markers.emplace_back(nm);
        return true;
    });
    if (err) return err;
    if (other) return ENOTEMPTY;
    return remove_markers(dirfd, markers);
}

// Removes whiteouts and opaque markers below a directory whose whole content is now in the
// writable branch (and which is itself opaque): they no longer hide anything.
namespace {

int tidy_tree(int dirfd, bool top) {
    if (::lseek(dirfd, 0, SEEK_SET) < 0) return errno;
    std::vector<std::string> markers, dirs;
    int err = for_each_entry(dirfd, [&](std::string_view nm, unsigned char type, uint64_t) {
        if (nm.starts_with(whiteout::kPrefix)) {
            if (!(top && nm == whiteout::kOpaque)) markers.emplace_back(nm);
        } else if (type == DT_DIR) {
            dirs.emplace_back(nm);
        }
    });
    if (err) return err;
    if (int e = remove_markers(dirfd, markers)) return e;
    for (const auto& s : dirs) {
        UniqueFd sub = open_subdir(dirfd, s);
        if (!sub) continue;
        if (int e = tidy_tree(sub.get(), false)) return e;
    }
    return 0;
}

}  // namespace

int Engine::tidy_copied(int dirfd) { return tidy_tree(dirfd, true); }

}  // namespace sk::union_fs
