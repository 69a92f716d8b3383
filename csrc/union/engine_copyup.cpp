// The writable branch: copy-up of entries and their parent directories, whiteouts, opaque
// directories and aufs's pseudo-links for hardlinked files copied up.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/syserror.hpp"
#include "copyup/copy.hpp"
#include "union/engine.hpp"
#include "whiteout/remove_tree.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::unionfs {
namespace {

constexpr const char* kBase = ".wh..wh.aufs";
constexpr const char* kPlnk = ".wh..wh.plnk";
constexpr const char* kOrph = ".wh..wh.orph";

std::string wh_name(const std::string& name) { return std::string(whiteout::kPrefix) + name; }

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
    if (::fstatat(root, kBase, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        !(S_ISREG(st.st_mode) && st.st_size == 0))
        remove_tree_at(root, kBase, top.path);
    UniqueFd base(::openat(root, kBase, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444));
    base_ok_ = bool(base);
    plnk_ = fresh_meta_dir(root, kPlnk, top.path);
    orph_ = fresh_meta_dir(root, kOrph, top.path);
}

void Engine::shutdown() {
    std::lock_guard lk(mu_);
    // Every name of a copied-up hardlinked file already is a real link in the writable
    // branch, so the pseudo-links are only bookkeeping of this mount.
    if (plnk_) empty_dir_at(plnk_.get(), br_[0].path + "/" + kPlnk);
    if (orph_) empty_dir_at(orph_.get(), br_[0].path + "/" + kOrph);
    plinks_.clear();
}

std::string Engine::temp_name() {
    return "cpup." + std::to_string(::getpid()) + "." + std::to_string(++temp_counter_);
}

bool Engine::name_ok(const std::string& name, int& err) const {
    if (name.starts_with(whiteout::kPrefix)) {
        err = EPERM;  // aufs refuses whiteout names
        return false;
    }
    if (name.size() > kMaxNameLen) {
        err = ENAMETOOLONG;
        return false;
    }
    return true;
}

// ------------------------------------------------------------------------------ markers

void Engine::make_whiteout(int dirfd, const std::string& name) {
    std::string w = wh_name(name);
    if (base_ok_ && ::linkat(br_[0].root.get(), kBase, dirfd, w.c_str(), 0) == 0) return;
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
    if (base_ok_ && ::linkat(br_[0].root.get(), kBase, dirfd, o.c_str(), 0) == 0) return;
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
static void tidy_tree(int dirfd, bool top) {
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

// -------------------------------------------------------------------------------- copy-up

int Engine::ensure_upper_dir(Node& dir) {
    if (!br_.has_rw()) return EROFS;
    if (int e = refresh(dir)) return e;
    if (&dir == root_.get() || (!dir.layers.empty() && dir.layers[0] == 0)) return 0;
    ++changes_;
    NodePtr parent = dir.names.back().parent;
    if (int e = ensure_upper_dir(*parent)) return e;
    UniqueFd src, dst;
    std::string name;
    if (int e = open_parent(dir, dir.branch, src, name)) return e;
    if (int e = open_parent(dir, 0, dst, name)) return e;
    std::string tmp = temp_name();
    try {
        copyup::copy_entry_at(src.get(), name.c_str(), orph_.get(), tmp.c_str());
    } catch (const SysError& e) {
        remove_tree_at(orph_.get(), tmp, "orph");
        return e.err;
    }
    if (::renameat2(orph_.get(), tmp.c_str(), dst.get(), name.c_str(), RENAME_NOREPLACE) < 0) {
        int e = errno;
        remove_tree_at(orph_.get(), tmp, "orph");
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

int Engine::copy_up(Node& n) {
    if (n.is_dir()) return ensure_upper_dir(n);
    if (!br_.has_rw()) return EROFS;
    if (int e = refresh(n)) return e;
    if (n.branch == 0) return 0;
    ++changes_;
    NodePtr parent = n.names.back().parent;
    if (int e = ensure_upper_dir(*parent)) return e;
    UniqueFd src, dst;
    std::string name;
    if (int e = open_parent(n, n.branch, src, name)) return e;
    if (int e = open_parent(n, 0, dst, name)) return e;
    struct stat lower;
    if (::fstatat(src.get(), name.c_str(), &lower, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    std::string tmp = temp_name();
    try {
        copyup::copy_entry_at(src.get(), name.c_str(), orph_.get(), tmp.c_str());
    } catch (const SysError& e) {
        ::unlinkat(orph_.get(), tmp.c_str(), 0);
        return e.err;
    }
    struct stat up;
    if (::fstatat(orph_.get(), tmp.c_str(), &up, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    bool hardlinked = S_ISREG(lower.st_mode) && lower.st_nlink > 1;
    if (hardlinked) add_pseudo_link(n, orph_.get(), tmp);
    if (::renameat2(orph_.get(), tmp.c_str(), dst.get(), name.c_str(), RENAME_NOREPLACE) < 0) {
        int e = errno;
        ::unlinkat(orph_.get(), tmp.c_str(), 0);
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
    if (int e = ensure_upper_dir(*dir)) return e;
    std::vector<DirEntry> entries;
    if (int e = list_dir(*dir, entries)) return e;
    for (const DirEntry& de : entries) {
        Found f;
        if (int e = find_entry(*dir, de.name, f)) return e;
        if (!f.found) continue;
        NodePtr child = node_for(dir, de.name, f, false);
        int e = child->is_dir() ? copy_up_tree(child) : copy_up(*child);
        if (e) return e;
    }
    return 0;
}

void Engine::tidy_copied(int dirfd) { tidy_tree(dirfd, true); }

// ---------------------------------------------------------------------------- pseudo-links

void Engine::add_pseudo_link(Node& n, int dirfd, const std::string& name) {
    if (!plnk_ || plinks_.count(n.ino)) return;
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return;
    // aufs names a pseudo-link "<aufs ino>.<ino in the branch>".
    std::string pl = std::to_string(n.ino) + "." + std::to_string(st.st_ino);
    if (::linkat(dirfd, name.c_str(), plnk_.get(), pl.c_str(), 0) == 0 || errno == EEXIST)
        plinks_[n.ino] = pl;
}

void Engine::drop_pseudo_link(uint64_t ino) {
    auto it = plinks_.find(ino);
    if (it == plinks_.end()) return;
    ::unlinkat(plnk_.get(), it->second.c_str(), 0);
    plinks_.erase(it);
}

const std::unordered_map<ino_t, std::vector<std::string>>& Engine::link_index(int b) {
    auto [it, fresh] = link_index_.try_emplace(b);
    if (!fresh) return it->second;
    auto& index = it->second;
    std::vector<std::string> todo{""};
    while (!todo.empty()) {
        std::string rel = std::move(todo.back());
        todo.pop_back();
        UniqueFd d = br_.open_dir(b, rel);
        DIR* dp = d ? ::fdopendir(d.get()) : nullptr;
        if (!dp) continue;
        int dfd = d.release();
        while (struct dirent* de = ::readdir(dp)) {
            std::string_view nm(de->d_name);
            if (nm == "." || nm == ".." || nm.starts_with(whiteout::kPrefix)) continue;
            unsigned type = de->d_type;
            if (type != DT_DIR && type != DT_REG && type != DT_UNKNOWN) continue;
            struct stat st;
            if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
            if (S_ISDIR(st.st_mode))
                todo.push_back(join_rel(rel, nm));
            else if (S_ISREG(st.st_mode) && st.st_nlink > 1)
                index[st.st_ino].push_back(join_rel(rel, nm));
        }
        ::closedir(dp);
    }
    return index;
}

// A hardlinked file of a read-only branch was copied up: its other names in that branch
// that the union shows become links of the copy, so they keep sharing one inode.
void Engine::link_other_names(Node& n, int branch, const struct stat& lower, int upper_dirfd,
                              const std::string& name) {
    const auto& index = link_index(branch);
    auto it = index.find(lower.st_ino);
    if (it == index.end()) return;
    auto self = rel_path(n);
    for (const std::string& path : it->second) {
        if (self && path == *self) continue;
        // Walk the path through the union: every directory on the way must be visible, and
        // the name must still show this very file of that branch.
        NodePtr dir = root_;
        size_t pos = 0;
        bool ok = true;
        std::string comp;
        while (true) {
            size_t slash = path.find('/', pos);
            comp = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
            if (slash == std::string::npos) break;
            Found f;
            if (find_entry(*dir, comp, f) || !f.found || !S_ISDIR(f.st.st_mode)) {
                ok = false;
                break;
            }
            dir = node_for(dir, comp, f, false);
            pos = slash + 1;
        }
        if (!ok) continue;
        Found f;
        if (find_entry(*dir, comp, f) || !f.found || f.branch != branch ||
            f.st.st_ino != lower.st_ino || f.st.st_dev != lower.st_dev)
            continue;
        if (ensure_upper_dir(*dir)) continue;
        auto drel = rel_path(*dir);
        if (!drel) continue;
        UniqueFd dd = br_.open_dir(0, *drel);
        if (!dd) continue;
        if (::linkat(upper_dirfd, name.c_str(), dd.get(), comp.c_str(), 0) == 0)
            add_name(n, dir, comp);
    }
}

void Engine::after_unlink(Node* n, const struct stat& before) {
    uint64_t ino = n ? n->ino : xino_.find(before.st_dev, before.st_ino);
    nlink_t left = before.st_nlink - 1;
    bool pl = ino && plinks_.count(ino);
    if (pl && left > 0) --left;
    if (left > 0) return;
    if (pl) drop_pseudo_link(ino);
    xino_.erase(before.st_dev, before.st_ino);
}

}  // namespace sk::unionfs
