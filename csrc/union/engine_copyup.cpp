// The writable branch: its bookkeeping directories, and copy-up of entries and their parent
// directories through the copyup area (reflink where the filesystem can).
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string>

#include "common/remove_tree.hpp"
#include "common/syserror.hpp"
#include "copyup/copy.hpp"
#include "union/aufs_names.hpp"
#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {
namespace {

UniqueFd open_subdir(int dirfd, const std::string& name) {
    return UniqueFd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

// A bookkeeping directory at the top of the writable branch, emptied: what it held belonged
// to an earlier mount.
UniqueFd fresh_meta_dir(int root, const char* name, const std::string& label) {
    struct stat st;
    if (::fstatat(root, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
        remove_tree_at(root, name, label);
    if (::mkdirat(root, name, 0700) < 0 && errno != EEXIST) throw_errno(label + "/" + name);
    UniqueFd fd = open_subdir(root, name);
    if (!fd) throw_errno(label + "/" + name);
    empty_dir_at(fd.get(), label + "/" + name);
    return fd;
}

}  // namespace

void Engine::init_rw_branch() {
    const Branch& top = br_[0];
    int root = top.root.get();
    struct stat st;
    if (::fstatat(root, kWhiteoutBase, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        !(S_ISREG(st.st_mode) && st.st_size == 0))
        remove_tree_at(root, kWhiteoutBase, top.path);
    UniqueFd base(::openat(root, kWhiteoutBase, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    base_ok_ = bool(base);
    plnk_ = fresh_meta_dir(root, kPlinkDir, top.path);
    orph_ = fresh_meta_dir(root, kOrphanDir, top.path);
}

void Engine::shutdown() {
    auto lk = lock();
    // Every name of a copied-up hardlinked file already is a real link in the writable
    // branch, so the pseudo-links are only bookkeeping of this mount; what cannot be removed
    // now the next mount removes.
    if (plnk_) with_errno([&] { empty_dir_at(plnk_.get(), br_[0].path + "/" + kPlinkDir); });
    if (orph_) with_errno([&] { empty_dir_at(orph_.get(), br_[0].path + "/" + kOrphanDir); });
    plinks_.clear();
}

std::string Engine::temp_name() {
    // Unique across mounts too: a copy a crashed engine left half-made keeps its name.
    if (temp_prefix_.empty()) {
        uint64_t r = 0;
        if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<uint64_t>(::time(nullptr));
        char buf[40];
        std::snprintf(buf, sizeof buf, "cpup.%d.%016llx.", static_cast<int>(::getpid()),
                      static_cast<unsigned long long>(r));
        temp_prefix_ = buf;
    }
    return temp_prefix_ + std::to_string(++temp_counter_);
}

int Engine::check_name(const std::string& name) const {
    if (name.starts_with(whiteout::kPrefix)) return EPERM;  // aufs refuses whiteout names
    if (name.size() > kMaxNameLen) return ENAMETOOLONG;
    return 0;
}

int Engine::ensure_upper_dir(Node& dir) {
    if (!br_.has_rw()) return EROFS;
    if (int e = refresh(dir)) return e;
    if (&dir == root_.get() || (!dir.layers.empty() && dir.layers[0] == 0)) return 0;
    DirRef src, dst;
    std::string name;
    if (int e = copy_ends(dir, src, dst, name)) return e;
    std::string tmp = temp_name();
    auto drop_copy = [&] { with_errno([&] { remove_tree_at(orph_.get(), tmp, "orph"); }); };
    if (int e = with_errno([&] {
            copyup::copy_entry_at(src.get(), name.c_str(), orph_.get(), tmp.c_str(), true,
                                  &copy_caps_[static_cast<size_t>(dir.branch)]);
        })) {
        drop_copy();
        return e;
    }
    if (::renameat2(orph_.get(), tmp.c_str(), dst.get(), name.c_str(), RENAME_NOREPLACE) < 0) {
        int e = errno;
        drop_copy();
        return e;
    }
    struct stat st;
    if (::fstatat(dst.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
        xino_.set(st.st_dev, st.st_ino, dir.ino);
    dir.layers.insert(dir.layers.begin(), 0);
    dir.branch = 0;
    ++dir.moves;
    return 0;
}

int Engine::copy_ends(Node& n, DirRef& src, DirRef& dst, std::string& name) {
    ++changes_;
    if (int e = ensure_upper_dir(*n.names.back().parent)) return e;
    if (int e = open_parent(n, n.branch, src, name)) return e;
    return open_parent(n, 0, dst, name);
}

int Engine::copy_up(Node& n) {
    if (n.is_dir()) return ensure_upper_dir(n);
    if (!br_.has_rw()) return EROFS;
    if (int e = refresh(n)) return e;
    if (n.branch == 0) return 0;
    DirRef src, dst;
    std::string name;
    if (int e = copy_ends(n, src, dst, name)) return e;
    struct stat lower;
    if (::fstatat(src.get(), name.c_str(), &lower, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    if (lower.st_size > (1 << 20)) may_block();
    // The copy is made beside its final name, under a bookkeeping name the union never
    // shows, and renamed into place: the filesystem allocates it near its directory (not
    // all copies in one directory, where ext4 searches ever longer for a free inode), and
    // the rename stays inside one directory.
    std::string tmp = std::string(whiteout::kMetaPrefix) + temp_name();
    struct stat up;
    if (int e = with_errno([&] {
            copyup::copy_entry_at(src.get(), name.c_str(), dst.get(), tmp.c_str(), true,
                                  &copy_caps_[static_cast<size_t>(n.branch)], &up);
        })) {
        ::unlinkat(dst.get(), tmp.c_str(), 0);
        return e;
    }
    bool hardlinked = S_ISREG(lower.st_mode) && lower.st_nlink > 1;
    if (hardlinked) add_pseudo_link(n, dst.get(), tmp);
    if (::renameat2(dst.get(), tmp.c_str(), dst.get(), name.c_str(), RENAME_NOREPLACE) < 0) {
        int e = errno;
        ::unlinkat(dst.get(), tmp.c_str(), 0);
        drop_pseudo_link(n.ino);
        return e;
    }
    int from = n.branch;
    xino_.set(up.st_dev, up.st_ino, n.ino);
    n.branch = 0;
    ++n.moves;
    if (hardlinked) link_other_names(n, from, lower, dst.get(), name);
    return 0;
}

int Engine::copy_up_tree(const NodePtr& dir) {
    may_block();
    if (int e = ensure_upper_dir(*dir)) return e;
    std::vector<MergedEntry> entries;
    if (int e = list_dir(*dir, entries)) return e;
    for (const MergedEntry& de : entries) {
        Found f;
        if (int e = find_entry(*dir, de.name, f)) return e;
        if (!f.found) continue;
        NodePtr child = node_for(dir, de.name, f, false);
        int e = child->is_dir() ? copy_up_tree(child) : copy_up(*child);
        if (e) return e;
    }
    return 0;
}

}  // namespace sk::union_fs
