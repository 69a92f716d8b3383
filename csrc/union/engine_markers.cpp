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

#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "union/aufs_names.hpp"
#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::unionfs {
namespace {

std::string wh_name(const std::string& name) { return std::string(whiteout::kPrefix) + name; }

UniqueFd open_subdir(int dirfd, const std::string& name) {
    return UniqueFd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

}  // namespace

void Engine::make_whiteout(int dirfd, const std::string& name) {
    std::string w = wh_name(name);
    if (base_ok_ && ::linkat(br_[0].root.get(), kWhiteoutBase, dirfd, w.c_str(), 0) == 0) return;
    if (errno == EEXIST) return;
    // Too many links to the base (or it is gone): an empty file of its own does the same.
    UniqueFd fd(::openat(dirfd, w.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    if (!fd) throw_errno(w);
}

void Engine::remove_whiteout(int dirfd, const std::string& name) {
    std::string w = wh_name(name);
    if (::unlinkat(dirfd, w.c_str(), 0) < 0 && errno != ENOENT) throw_errno(w);
}

bool Engine::has_whiteout(int dirfd, const std::string& name) const {
    struct stat st;
    return ::fstatat(dirfd, wh_name(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

void Engine::make_opaque(int dirfd) {
    std::string o(whiteout::kOpaque);
    if (base_ok_ && ::linkat(br_[0].root.get(), kWhiteoutBase, dirfd, o.c_str(), 0) == 0) return;
    if (errno == EEXIST) return;
    UniqueFd fd(::openat(dirfd, o.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    if (!fd) throw_errno(o);
}

bool Engine::clear_markers(int dirfd) {
    UniqueFd d(::dup(dirfd));
    DIR* dp = d ? ::fdopendir(d.get()) : nullptr;
    if (!dp) throw_errno("directory");
    d.release();
    ::rewinddir(dp);
    std::vector<std::string> markers;
    bool other = false;
    while (struct dirent* de = ::readdir(dp)) {
        std::string_view nm(de->d_name);
        if (nm == "." || nm == "..") continue;
        if (nm.starts_with(whiteout::kPrefix))
            markers.emplace_back(nm);
        else
            other = true;
    }
    ::closedir(dp);
    if (other) return false;
    for (const auto& m : markers) remove_tree_at(dirfd, m, "directory");
    return true;
}

// Removes whiteouts and opaque markers below a directory whose whole content is now in the
// writable branch (and which is itself opaque): they no longer hide anything.
namespace {

void tidy_tree(int dirfd, bool top) {
    UniqueFd d(::dup(dirfd));
    DIR* dp = d ? ::fdopendir(d.get()) : nullptr;
    if (!dp) throw_errno("directory");
    d.release();
    ::rewinddir(dp);
    std::vector<std::string> markers, dirs;
    while (struct dirent* de = ::readdir(dp)) {
        std::string nm(de->d_name);
        if (nm == "." || nm == "..") continue;
        if (nm.starts_with(whiteout::kPrefix)) {
            if (!(top && nm == whiteout::kOpaque)) markers.push_back(nm);
        } else if (de->d_type == DT_DIR) {
            dirs.push_back(nm);
        }
    }
    ::closedir(dp);
    for (const auto& m : markers) remove_tree_at(dirfd, m, "directory");
    for (const auto& s : dirs) {
        UniqueFd sub = open_subdir(dirfd, s);
        if (sub) tidy_tree(sub.get(), false);
    }
}

}  // namespace

void Engine::tidy_copied(int dirfd) { tidy_tree(dirfd, true); }

}  // namespace sk::unionfs
