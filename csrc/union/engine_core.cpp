// Where entries are: top-down lookups through the branch stack, the node table, merged
// directory listings.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <unordered_set>

#include "union/branch_entries.hpp"
#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {
namespace {

bool exists_at(int dirfd, const std::string& name) {
    struct stat st;
    return ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

std::string wh_name(const std::string& name) { return std::string(whiteout::kPrefix) + name; }

}  // namespace

Engine::Engine(BranchStack branches, IndexLimits limits)
    : br_(std::move(branches)), index_cache_(limits.fds, limits.names), xino_(2) {
    copy_caps_ = std::make_unique<copyup::FsCaps[]>(br_.size());
    root_ = std::make_shared<Node>();
    root_->id = 1;
    root_->ino = 1;
    root_->type = S_IFDIR;
    root_->nlookup = 1;
    root_->gen = gen_;
    const std::string opq(whiteout::kOpaque);
    for (size_t b = 0; b < br_.size(); ++b) xino_.add_fs(br_[b].dev);
    for (size_t b = 0; b < br_.size(); ++b) {
        struct stat st;
        if (::fstat(br_[b].root.get(), &st) == 0) xino_.set(st.st_dev, st.st_ino, 1);
        root_->layers.push_back(static_cast<int>(b));
        if (br_[b].whiteouts && exists_at(br_[b].root.get(), opq)) break;
    }
    nodes_[1] = root_;
    by_ino_[1] = root_;
    if (br_.has_rw()) init_rw_branch();
}

Engine::~Engine() = default;

mode_t Engine::root_mode() const {
    struct stat st;
    if (::fstat(br_[0].root.get(), &st) < 0) return S_IFDIR | 0755;
    return st.st_mode;
}

NodePtr Engine::node(uint64_t id) {
    auto it = nodes_.find(id);
    return it == nodes_.end() ? nullptr : it->second;
}

int Engine::live_node(uint64_t id, NodePtr& out) {
    out = node(id);
    if (!out) return ENOENT;
    return refresh(*out);
}

int Engine::live_entry(uint64_t id, NodePtr& out, DirRef& dir, std::string& name) {
    if (int e = live_node(id, out)) return e;
    return open_parent(*out, out->branch, dir, name);
}

std::optional<std::string> Engine::rel_path(const Node& n) const {
    std::vector<const std::string*> parts;
    const Node* cur = &n;
    while (cur != root_.get()) {
        if (cur->names.empty()) return std::nullopt;
        parts.push_back(&cur->names.back().name);
        cur = cur->names.back().parent.get();
        if (parts.size() > 4096) return std::nullopt;
    }
    std::string out;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (!out.empty()) out += '/';
        out += **it;
    }
    return out;
}

int Engine::refresh(Node& n) {
    if (&n == root_.get()) return 0;
    if (n.removed || n.names.empty()) return ENOENT;
    if (n.gen == gen_) return 0;
    NodeName nm = n.names.back();
    if (int e = refresh(*nm.parent)) return e;
    Found f;
    if (int e = find_entry(*nm.parent, nm.name, f)) return e;
    if (!f.found || ino_of(f.branch, f.st) != n.ino) return ENOENT;
    n.branch = f.branch;
    n.layers = std::move(f.layers);
    n.gen = gen_;
    return 0;
}

int Engine::upper_fd(Node& dir, int& fd) {
    if (&dir == root_.get()) {
        fd = br_[0].root.get();
        return 0;
    }
    if (!dir.upper_dir) {
        // Down from the nearest ancestor whose directory is open, one name at a time, each
        // directory on the way kept by its node (they are the ones the kernel reached it by).
        std::vector<Node*> chain;
        for (Node* cur = &dir; cur != root_.get() && !cur->upper_dir;) {
            if (cur->names.empty() || chain.size() > nodes_.size() + by_ino_.size())
                return ENOENT;
            chain.push_back(cur);
            cur = cur->names.back().parent.get();
        }
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
            Node& parent = *(*it)->names.back().parent;
            int pfd = &parent == root_.get() ? br_[0].root.get() : parent.upper_dir.get();
            if (int e = open_subdir(pfd, (*it)->names.back().name, (*it)->upper_dir)) return e;
        }
    }
    fd = dir.upper_dir.get();
    return 0;
}

int Engine::open_dir_in(Node& dir, int b, UniqueFd& out) {
    out.reset();
    // The nearest ancestor (dir included) whose directory in branch b is open: the branch
    // root, or a directory an index keeps.
    std::vector<const std::string*> names;
    std::shared_ptr<DirIndex> hold;
    int base = -1;
    for (Node* cur = &dir;;) {
        if (cur == root_.get()) {
            base = br_[static_cast<size_t>(b)].root.get();
            break;
        }
        if (b == 0 && br_.has_rw() && cur->upper_dir) {
            base = cur->upper_dir.get();
            break;
        }
        if (cur->index) {
            const auto& ls = cur->index->layers();
            if (auto it = std::find(ls.begin(), ls.end(), b); it != ls.end()) {
                int fd = cur->index->fd(static_cast<int>(it - ls.begin()));
                if (fd >= 0) {
                    hold = cur->index;
                    base = fd;
                    break;
                }
            }
        }
        if (cur->names.empty() || names.size() > nodes_.size() + by_ino_.size()) return ENOENT;
        names.push_back(&cur->names.back().name);
        cur = cur->names.back().parent.get();
    }
    // Opened anew, not duplicated: a duplicate would share the offset of a descriptor that
    // may have been read to its end already.
    if (names.empty()) return open_subdir(base, ".", out);
    UniqueFd cur;
    for (auto it = names.rbegin(); it != names.rend(); ++it) {
        UniqueFd next;
        if (int e = open_subdir(cur ? cur.get() : base, **it, next)) return e;
        cur = std::move(next);
    }
    out = std::move(cur);
    return 0;
}

std::shared_ptr<DirIndex> Engine::lower_index(Node& dir) {
    size_t start = lower_start(dir);
    if (start >= dir.layers.size()) return nullptr;
    auto lower_begin = dir.layers.begin() + static_cast<std::ptrdiff_t>(start);
    if (dir.index && std::equal(lower_begin, dir.layers.end(), dir.index->layers().begin(),
                                dir.index->layers().end())) {
        index_cache_.touch(*dir.index);
        return dir.index;
    }
    if (dir.layers.size() - start > 32) may_block();
    // Each branch's directory opened from its parent's (which the parent's index most likely
    // keeps): never by a path, which the kernel refuses from PATH_MAX bytes on.
    auto idx_new = std::make_shared<DirIndex>(
        br_, std::vector<int>(lower_begin, dir.layers.end()),
        [&](int b, UniqueFd& fd) { return open_dir_in(dir, b, fd); });
    if (dir.index) index_cache_.remove(*dir.index);
    dir.index = std::move(idx_new);
    index_cache_.add(*dir.index, &dir);
    std::shared_ptr<DirIndex> idx = dir.index;
    index_cache_.trim();
    return idx;
}

int Engine::dir_fd(Node& dir, int b, DirRef& out) {
    out = DirRef{};
    if (b == 0 && br_.has_rw()) return upper_fd(dir, out.fd);
    if (auto idx = lower_index(dir)) {
        const auto& ls = idx->layers();
        if (auto it = std::find(ls.begin(), ls.end(), b); it != ls.end()) {
            out.fd = idx->fd(static_cast<int>(it - ls.begin()));
            if (out.fd < 0) return ENOENT;
            out.hold = std::move(idx);
            return 0;
        }
    }
    // A branch the directory does not merge (the entry's own branch after a change).
    if (int e = open_dir_in(dir, b, out.owned)) return e;
    out.fd = out.owned.get();
    return 0;
}

void Engine::drop_dir_state(Node& dir) {
    dir.upper_dir.reset();
    if (dir.index) {
        index_cache_.remove(*dir.index);
        dir.index.reset();
    }
}

int Engine::find_entry(Node& parent, const std::string& name, Found& f) {
    if (!parent.is_dir()) return ENOTDIR;
    const std::string opq = name + "/" + std::string(whiteout::kOpaque);
    size_t start = lower_start(parent);
    if (start == 1) {
        // The writable branch is not indexed: it changes all the time. Two fstatat at most.
        int d = -1;
        if (upper_fd(parent, d) == 0) {
            struct stat st;
            if (::fstatat(d, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
                f.found = true;
                f.branch = 0;
                f.st = st;
                if (!S_ISDIR(st.st_mode)) return 0;
                f.layers.push_back(0);
                if (br_[0].whiteouts && (exists_at(d, opq) || exists_at(d, wh_name(name))))
                    return 0;
            } else if (br_[0].whiteouts && exists_at(d, wh_name(name))) {
                f.upper_whiteout = true;
                return 0;
            }
        }
    }
    if (start >= parent.layers.size()) return 0;
    auto idx = lower_index(parent);
    if (!idx) return 0;
    const DirIndex::Slot* s = idx->find(name);
    if (!s) return 0;
    if (!f.found) {
        struct stat st;
        if (::fstatat(idx->fd(s->first), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return 0;
        f.found = true;
        f.branch = idx->layers()[static_cast<size_t>(s->first)];
        f.st = st;
        if (!S_ISDIR(st.st_mode)) return 0;
    } else if (s->type != DT_DIR) {
        return 0;  // a non-directory hides what is below it
    }
    for (int pos : s->dirs) {
        int b = idx->layers()[static_cast<size_t>(pos)];
        f.layers.push_back(b);
        if (br_[static_cast<size_t>(b)].whiteouts && exists_at(idx->fd(pos), opq)) break;
    }
    if (f.layers.empty()) f.layers.push_back(f.branch);
    return 0;
}

bool Engine::lower_has(Node& parent, const std::string& name) {
    if (lower_start(parent) >= parent.layers.size()) return false;
    auto idx = lower_index(parent);
    return idx && idx->find(name);
}

uint64_t Engine::ino_of(int /*branch*/, const struct stat& st) {
    // Real inode numbers are unique per filesystem, and a branch's entries all live on its
    // filesystem (mounts inside branches aside).
    return xino_.get(st.st_dev, st.st_ino);
}

void Engine::add_name(Node& n, const NodePtr& parent, const std::string& name) {
    if (n.is_dir()) n.names.clear();
    std::erase_if(n.names, [&](const NodeName& x) { return x.parent == parent && x.name == name; });
    n.names.push_back({parent, name});
    n.removed = false;
}

void Engine::drop_name(Node& n, const NodePtr& parent, const std::string& name) {
    std::erase_if(n.names, [&](const NodeName& x) { return x.parent == parent && x.name == name; });
    if (n.names.empty()) n.removed = true;
}

NodePtr Engine::node_for(const NodePtr& parent, const std::string& name, const Found& f,
                         bool expose) {
    uint64_t ino = ino_of(f.branch, f.st);
    mode_t type = f.st.st_mode & S_IFMT;
    NodePtr n;
    if (auto it = by_ino_.find(ino); it != by_ino_.end()) n = it->second.lock();
    if (n && n->type != type) {
        // The real inode number was reused by a file of another kind behind the engine's back.
        ino = xino_.fresh();
        xino_.set(f.st.st_dev, f.st.st_ino, ino);
        n = nullptr;
    }
    if (!n) {
        n = std::make_shared<Node>();
        n->ino = ino;
        n->type = type;
        // Nodes made only for a moment (listing a directory to remove it, copying a tree)
        // leave expired entries behind: sweep them now and then.
        if (by_ino_.size() > 4 * nodes_.size() + 4096)
            std::erase_if(by_ino_, [](const auto& kv) { return kv.second.expired(); });
        by_ino_[ino] = n;
    }
    n->branch = f.branch;
    n->layers = f.layers;
    n->gen = gen_;
    n->last = f.st;
    add_name(*n, parent, name);
    if (expose) {
        auto it = n->id ? nodes_.find(n->id) : nodes_.end();
        if (it == nodes_.end() || it->second != n) {
            if (n->id == 0 || nodes_.count(n->id)) n->id = nodes_.count(n->ino) ? xino_.fresh() : n->ino;
            nodes_[n->id] = n;
        }
        ++n->nlookup;
    }
    return n;
}

void Engine::forget(uint64_t id, uint64_t nlookup) {
    auto lk = lock();
    if (id == 1) return;  // the root lives as long as the mount
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    NodePtr n = it->second;
    n->nlookup -= std::min(n->nlookup, nlookup);
    if (n->nlookup > 0) return;
    nodes_.erase(it);
    if (n->is_dir()) drop_dir_state(*n);
    uint64_t ino = n->ino;
    n.reset();
    if (auto w = by_ino_.find(ino); w != by_ino_.end() && w->second.expired()) by_ino_.erase(w);
}

void Engine::adjust_stat(const Node& n, struct stat& st) const {
    st.st_ino = n.ino;
    if (n.is_dir() && n.layers.size() > 1) st.st_nlink = 1;  // merged, as overlayfs reports
    if (S_ISREG(st.st_mode) && st.st_nlink > 1 && plinks_.count(n.ino)) --st.st_nlink;
}

double Engine::attr_timeout(const Node&) const {
    // Every branch changes only through the union (udba=none), and the kernel knows what it
    // changed through it: entries and attributes can be cached as long as it likes.
    return kCacheTimeout;
}

void Engine::fill_entry(Node& n, const struct stat& real, Entry& out) {
    out.id = n.id;
    out.st = real;
    adjust_stat(n, out.st);
    n.last = real;
    out.attr_timeout = attr_timeout(n);
    out.entry_timeout = kCacheTimeout;
}

int Engine::open_parent(Node& n, int branch, DirRef& fd, std::string& name) {
    if (&n == root_.get()) {
        fd = DirRef{};
        fd.fd = br_[static_cast<size_t>(branch)].root.get();
        name = ".";
        return 0;
    }
    if (n.names.empty()) return ENOENT;
    name = n.names.back().name;
    return dir_fd(*n.names.back().parent, branch, fd);
}

int Engine::stat_node(Node& n, struct stat& st) {
    int e = refresh(n);
    if (e == 0) {
        DirRef d;
        std::string name;
        e = open_parent(n, n.branch, d, name);
        if (e == 0 && ::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) e = errno;
        if (e == 0 && (st.st_mode & S_IFMT) != n.type) e = ENOENT;
    }
    if (e == ENOENT || e == ENOTDIR) {
        // Deleted but still open: the open file knows.
        for (FileHandle* fh : n.files)
            if (::fstat(fh->fd.load(), &st) == 0) return 0;
        if (n.removed) {
            st = n.last;
            st.st_nlink = 0;
            return 0;
        }
    }
    if (e == 0) n.last = st;
    return e;
}

int Engine::list_dir(Node& dir, std::vector<MergedEntry>& out, size_t limit) {
    std::unordered_set<std::string> seen, hidden;
    size_t start = lower_start(dir);
    if (start == 1) {
        int d;
        if (int e = upper_fd(dir, d)) return e;
        if (::lseek(d, 0, SEEK_SET) < 0) return errno;
        bool full = false;
        int err = for_each_branch_entry(
            d, br_[0].whiteouts,
            [&](std::string_view nm, unsigned char type, uint64_t ino) {
                std::string name(nm);
                out.push_back({name, xino_.get(br_[0].dev, static_cast<ino_t>(ino)), type, 0});
                seen.insert(std::move(name));
                full = out.size() >= limit;
                return !full;
            },
            [&](std::string_view hidden_name) { hidden.emplace(hidden_name); });
        if (err) return err;
        if (full) return 0;
    }
    if (start >= dir.layers.size()) return 0;
    auto idx = lower_index(dir);
    if (!idx) return ENOENT;
    for (const DirIndex::Named* e : idx->listing()) {
        if (start == 1 && (seen.count(e->first) || hidden.count(e->first))) continue;
        int b = idx->layers()[static_cast<size_t>(e->second.first)];
        out.push_back({e->first, xino_.get(br_[static_cast<size_t>(b)].dev, e->second.ino),
                       e->second.type, b});
        if (out.size() >= limit) return 0;
    }
    return 0;
}

int Engine::check_empty(Node& dir) {
    std::vector<MergedEntry> entries;
    if (int e = list_dir(dir, entries, 1)) return e;
    return entries.empty() ? 0 : ENOTEMPTY;
}

}  // namespace sk::union_fs
