// Where entries are: top-down lookups through the branch stack, the node table, merged
// directory listings.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <unordered_set>

#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::unionfs {
namespace {

bool exists_at(int dirfd, const std::string& name) {
    struct stat st;
    return ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

std::string wh_name(const std::string& name) { return std::string(whiteout::kPrefix) + name; }

}  // namespace

Engine::Engine(BranchStack branches) : br_(std::move(branches)), xino_(2) {
    root_ = std::make_shared<Node>();
    root_->id = 1;
    root_->ino = 1;
    root_->type = S_IFDIR;
    root_->nlookup = 1;
    root_->gen = gen_;
    const std::string opq(whiteout::kOpaque);
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

int Engine::find_entry(Node& parent, const std::string& name, Found& f) {
    if (!parent.is_dir()) return ENOTDIR;
    auto rel = rel_path(parent);
    if (!rel) return ENOENT;
    return find_entry_in(*rel, parent.layers, name, f);
}

int Engine::find_entry_in(const std::string& parent_rel, const std::vector<int>& layers,
                          const std::string& name, Found& f) {
    const std::string wh = wh_name(name);
    const std::string opq = name + "/" + std::string(whiteout::kOpaque);
    for (int b : layers) {
        UniqueFd d = br_.open_dir(b, parent_rel);
        if (!d) continue;
        bool wh_counts = br_[b].whiteouts;
        struct stat st;
        if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (!f.found) {
                f.found = true;
                f.branch = b;
                f.st = st;
                if (!S_ISDIR(st.st_mode)) return 0;
            } else if (!S_ISDIR(st.st_mode)) {
                break;  // a non-directory hides what is below it
            }
            f.layers.push_back(b);
            if (wh_counts && (exists_at(d.get(), opq) || exists_at(d.get(), wh))) break;
        } else if (wh_counts && exists_at(d.get(), wh)) {
            break;
        }
    }
    return 0;
}

bool Engine::lower_has(Node& parent, const std::string& name) {
    auto rel = rel_path(parent);
    if (!rel) return false;
    const std::string wh = wh_name(name);
    for (int b : parent.layers) {
        if (b == 0 && br_.has_rw()) continue;
        UniqueFd d = br_.open_dir(b, *rel);
        if (!d) continue;
        if (exists_at(d.get(), name)) return true;
        if (br_[b].whiteouts && exists_at(d.get(), wh)) return false;
    }
    return false;
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
    std::lock_guard lk(mu_);
    if (id == 1) return;  // the root lives as long as the mount
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    NodePtr n = it->second;
    n->nlookup -= std::min(n->nlookup, nlookup);
    if (n->nlookup > 0) return;
    nodes_.erase(it);
    uint64_t ino = n->ino;
    n.reset();
    if (auto w = by_ino_.find(ino); w != by_ino_.end() && w->second.expired()) by_ino_.erase(w);
}

void Engine::adjust_stat(const Node& n, struct stat& st) const {
    st.st_ino = n.ino;
    if (n.is_dir() && n.layers.size() > 1) st.st_nlink = 1;  // merged, as overlayfs reports
    if (S_ISREG(st.st_mode) && st.st_nlink > 1 && plinks_.count(n.ino)) --st.st_nlink;
}

double Engine::attr_timeout(const Node& n) const {
    // Entries of read-only branches change only through the engine, which tells the kernel.
    return (n.branch != 0 || !br_.has_rw()) ? 3600.0 : 1.0;
}

void Engine::fill_entry(Node& n, const struct stat& real, Entry& out) {
    out.id = n.id;
    out.st = real;
    adjust_stat(n, out.st);
    n.last = real;
    out.attr_timeout = attr_timeout(n);
    out.entry_timeout = out.attr_timeout > 1.0 ? 3600.0 : 10.0;
}

int Engine::open_parent(Node& n, int branch, UniqueFd& fd, std::string& name) {
    if (&n == root_.get()) {
        fd = br_.open_dir(branch, "");
        name = ".";
        return fd ? 0 : errno;
    }
    if (n.names.empty()) return ENOENT;
    auto rel = rel_path(*n.names.back().parent);
    if (!rel) return ENOENT;
    fd = br_.open_dir(branch, *rel);
    name = n.names.back().name;
    return fd ? 0 : errno;
}

int Engine::stat_node(Node& n, struct stat& st) {
    int e = refresh(n);
    if (e == 0) {
        UniqueFd d;
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

int Engine::list_dir(Node& dir, std::vector<DirEntry>& out, size_t limit) {
    auto rel = rel_path(dir);
    if (!rel) return ENOENT;
    std::unordered_set<std::string> seen, hidden;
    for (int b : dir.layers) {
        UniqueFd d = br_.open_dir(b, *rel);
        if (!d) continue;
        DIR* dp = ::fdopendir(d.get());
        if (!dp) return errno;
        int dfd = d.release();
        std::vector<std::string> whited;
        while (struct dirent* de = ::readdir(dp)) {
            std::string_view nm(de->d_name);
            if (nm == "." || nm == "..") continue;
            if (nm.starts_with(whiteout::kPrefix)) {
                if (br_[b].whiteouts && !nm.starts_with(whiteout::kMetaPrefix) &&
                    nm.size() > whiteout::kPrefix.size())
                    whited.emplace_back(nm.substr(whiteout::kPrefix.size()));
                continue;
            }
            std::string name(nm);
            if (hidden.count(name) || !seen.insert(name).second) continue;
            uint32_t type = de->d_type;
            if (type == DT_UNKNOWN) {
                struct stat st;
                if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
                type = IFTODT(st.st_mode);
            }
            out.push_back({std::move(name), xino_.get(br_[b].dev, de->d_ino), type, b});
            if (out.size() >= limit) {
                ::closedir(dp);
                return 0;
            }
        }
        ::closedir(dp);
        for (auto& w : whited) hidden.insert(std::move(w));
    }
    return 0;
}

}  // namespace sk::unionfs
