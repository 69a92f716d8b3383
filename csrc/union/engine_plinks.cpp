// aufs pseudo-links: a hardlinked file of a read-only branch that is copied up keeps one
// inode for all its names. The copy gets a link in ".wh..wh.plnk" named "<union ino>.<branch
// ino>" (aufs's naming) for as long as the mount lives, and the file's other names that the
// union shows become links of the copy at once.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/dir_entries.hpp"
#include "union/engine.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::union_fs {

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
    may_block();  // a walk of the whole branch
    // Depth first, each directory opened from its parent's descriptor (any depth works);
    // only the directories on the way down stay open.
    struct Todo {
        std::shared_ptr<UniqueFd> parent;  // null for the branch root
        std::string name, rel;
    };
    std::vector<Todo> todo{{nullptr, "", ""}};
    while (!todo.empty()) {
        Todo t = std::move(todo.back());
        todo.pop_back();
        auto d = std::make_shared<UniqueFd>();
        if (t.parent ? open_subdir(t.parent->get(), t.name, *d)
                     : br_.open_dir(static_cast<size_t>(b), "", *d))
            continue;
        t.parent.reset();
        // What cannot be read is left out of the index: those names are not linked.
        for_each_entry(d->get(), [&](std::string_view nm, unsigned char type, uint64_t) {
            if (nm.starts_with(whiteout::kPrefix)) return;
            if (type != DT_DIR && type != DT_REG && type != DT_UNKNOWN) return;
            struct stat st;
            if (::fstatat(d->get(), nm.data(), &st, AT_SYMLINK_NOFOLLOW) < 0) return;
            if (S_ISDIR(st.st_mode))
                todo.push_back({d, std::string(nm), join_rel(t.rel, nm)});
            else if (S_ISREG(st.st_mode) && st.st_nlink > 1)
                index[st.st_ino].push_back(join_rel(t.rel, nm));
        });
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
        int dd;
        if (ensure_upper_dir(*dir) || upper_fd(*dir, dd)) continue;
        if (::linkat(upper_dirfd, name.c_str(), dd, comp.c_str(), 0) == 0)
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

}  // namespace sk::union_fs
