// The change scan: both trees are walked together, directory by directory, through dirfds.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "changes/changes.hpp"
#include "changes/node_stat.hpp"
#include "common/dir_entries.hpp"
#include "common/syserror.hpp"
#include "common/unique_fd.hpp"
#include "copyup/xattr_io.hpp"

namespace sk::changes {
namespace {

UniqueFd open_dir(int dirfd, const char* name) {
    constexpr int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(dirfd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = ::openat(dirfd, name, flags);
    return UniqueFd(fd);
}

void sort_by_name(std::vector<DirEntry>& entries) {
    std::sort(entries.begin(), entries.end(),
              [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
}

// Tar keeps mtimes in whole seconds: a file extracted from one must still compare equal.
bool same_mtime(const timespec& a, const timespec& b) {
    if (a.tv_sec != b.tv_sec) return false;
    return a.tv_nsec == b.tv_nsec || a.tv_nsec == 0 || b.tv_nsec == 0;
}

bool stat_differs(const NodeStat& a, const NodeStat& b) {
    if (a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || a.rdev != b.rdev) return true;
    // A directory's size and mtime move with any change of its entries, which are compared
    // on their own.
    if (S_ISDIR(a.mode)) return false;
    // A new hardlink to a file of the parent changes the file's link count: listing the file
    // lets an export carry it and the link together, as a native diff of a layer that had to
    // copy the file up for the link does.
    return a.size != b.size || !same_mtime(a.mtime, b.mtime) || a.nlink != b.nlink;
}

class Scanner {
public:
    Scanner(std::string layer_root, std::string parent_root)
        : layer_root_(std::move(layer_root)), parent_root_(std::move(parent_root)) {}

    std::vector<Change> out;

    // Records the changes inside directories l (layer) and p (parent) at `prefix` ("" for
    // the roots); returns whether there were any. `empty`: set when both have no entries.
    bool compare_dirs(int l, int p, const std::string& prefix, bool* empty = nullptr);
    // Everything inside directory `fd` at `prefix` is added; returns whether it had entries.
    bool add_children(int fd, const std::string& prefix);

private:
    void compare_entry(int l, int p, const std::string& name, const std::string& path);
    void add_tree(int dirfd, const DirEntry& e, const std::string& path);
    bool xattrs_differ(int l, int p, const char* name, const std::string& path);
    std::string link_target(int dirfd, const char* name, const std::string& err_path);

    [[noreturn]] void fail_layer(int err, const std::string& path) {
        throw SysError(err, layer_root_ + path);
    }
    [[noreturn]] void fail_parent(int err, const std::string& path) {
        throw SysError(err, parent_root_ + path);
    }

    const std::string layer_root_, parent_root_;
};

bool Scanner::add_children(int fd, const std::string& prefix) {
    std::vector<DirEntry> entries;
    if (int err = read_dir(fd, entries)) fail_layer(err, prefix);
    for (const DirEntry& e : entries) add_tree(fd, e, prefix + "/" + e.name);
    return !entries.empty();
}

void Scanner::add_tree(int dirfd, const DirEntry& e, const std::string& path) {
    out.push_back(Change{path, Kind::add});
    bool is_dir = e.type == DT_DIR;
    if (e.type == DT_UNKNOWN) {
        NodeStat st;
        if (int err = stat_node(dirfd, e.name.c_str(), st)) fail_layer(err, path);
        is_dir = S_ISDIR(st.mode);
    }
    if (!is_dir) return;
    UniqueFd fd = open_dir(dirfd, e.name.c_str());
    if (!fd) fail_layer(errno, path);
    NodeStat st;
    if (int err = stat_node(fd.get(), "", st)) fail_layer(err, path);
    if (!st.mount_root) add_children(fd.get(), path);
}

bool Scanner::compare_dirs(int l, int p, const std::string& prefix, bool* empty) {
    const size_t before = out.size();
    std::vector<DirEntry> le, pe;
    if (int err = read_dir(l, le)) fail_layer(err, prefix);
    if (int err = read_dir(p, pe)) fail_parent(err, prefix);
    if (empty) *empty = le.empty() && pe.empty();
    sort_by_name(le);
    sort_by_name(pe);
    size_t i = 0, j = 0;
    while (i < le.size() || j < pe.size()) {
        int cmp = i == le.size() ? 1 : j == pe.size() ? -1 : le[i].name.compare(pe[j].name);
        if (cmp < 0) {
            add_tree(l, le[i], prefix + "/" + le[i].name);
            ++i;
        } else if (cmp > 0) {
            out.push_back(Change{prefix + "/" + pe[j].name, Kind::del});
            ++j;
        } else {
            compare_entry(l, p, le[i].name, prefix + "/" + le[i].name);
            ++i;
            ++j;
        }
    }
    return out.size() > before;
}

void Scanner::compare_entry(int l, int p, const std::string& name, const std::string& path) {
    const char* n = name.c_str();
    NodeStat ls, ps;
    if (int err = stat_node(l, n, ls)) fail_layer(err, path);
    if (int err = stat_node(p, n, ps)) fail_parent(err, path);
    bool modified = stat_differs(ls, ps) || xattrs_differ(l, p, n, path) ||
                    (S_ISLNK(ls.mode) && link_target(l, n, layer_root_ + path) !=
                                             link_target(p, n, parent_root_ + path));
    if (modified) out.push_back(Change{path, Kind::modify});
    if (!S_ISDIR(ls.mode) || ls.mount_root) return;

    UniqueFd lc = open_dir(l, n);
    if (!lc) fail_layer(errno, path);
    bool inside;
    if (S_ISDIR(ps.mode) && !ps.mount_root) {
        UniqueFd pc = open_dir(p, n);
        if (!pc) fail_parent(errno, path);
        bool empty = false;
        inside = compare_dirs(lc.get(), pc.get(), path, &empty);
        // An empty directory removed and made again ("rmdir d; mkdir d") shows only in its
        // mtime; overlay and aufs record it as an opaque directory, which their diffs carry,
        // so it is a change here too. Only empty ones: the mtime of a directory with entries
        // moves with every entry made and removed in it (moby#9874).
        if (empty && !modified && !same_mtime(ls.mtime, ps.mtime)) {
            out.push_back(Change{path, Kind::modify});
            return;
        }
    } else {
        // Was something else: all its contents are new.
        inside = add_children(lc.get(), path);
    }
    // A directory holding a change is listed too, so that an export carries its metadata.
    if (inside && !modified) out.push_back(Change{path, Kind::modify});
}

bool Scanner::xattrs_differ(int l, int p, const char* name, const std::string& path) {
    thread_local std::string lnames, pnames;
    xattr::Node ln = xattr::Node::at(l, name), pn = xattr::Node::at(p, name);
    if (int r = xattr::list(ln, lnames)) fail_layer(-r, path);
    if (int r = xattr::list(pn, pnames)) fail_parent(-r, path);
    if (lnames.empty() && pnames.empty()) return false;
    std::vector<std::pair<std::string, std::string>> la, pa;
    if (int r = xattr::read_all(ln, la)) fail_layer(-r, path);
    if (int r = xattr::read_all(pn, pa)) fail_parent(-r, path);
    return la != pa;
}

std::string Scanner::link_target(int dirfd, const char* name, const std::string& err_path) {
    std::string target(256, '\0');
    for (;;) {
        ssize_t n = ::readlinkat(dirfd, name, target.data(), target.size());
        if (n < 0) throw SysError(errno, err_path);
        if (static_cast<size_t>(n) < target.size()) {
            target.resize(static_cast<size_t>(n));
            return target;
        }
        target.resize(target.size() * 2);
    }
}

}  // namespace

std::vector<Change> scan(const std::string& layer, const std::optional<std::string>& parent) {
    Scanner s(layer, parent.value_or(std::string()));
    UniqueFd l = open_dir(AT_FDCWD, layer.c_str());
    if (!l) throw SysError(errno, layer);
    if (parent) {
        UniqueFd p = open_dir(AT_FDCWD, parent->c_str());
        if (!p) throw SysError(errno, *parent);
        s.compare_dirs(l.get(), p.get(), "");
    } else {
        s.add_children(l.get(), "");
    }
    std::sort(s.out.begin(), s.out.end(),
              [](const Change& a, const Change& b) { return a.path < b.path; });
    return std::move(s.out);
}

}  // namespace sk::changes
