// Questions about paths answered from the mount table: which mount a path is on, what is
// mounted under it, and in which order to unmount that.
//
// Position in mountinfo is not a reliable age (the kernel lists mounts by id, ids are reused,
// moved mounts keep theirs), so visibility is worked out from the parent links: a mount's
// parent is the mount its mount point was looked up in when it was attached.
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <unordered_map>

#include "common/syserror.hpp"
#include "mount/mount.hpp"

namespace sk {
namespace {

// Is `base` equal to `path` or one of its ancestors, by whole components (so "/mnt/a" does
// not cover "/mnt/ab")? Both are normalized absolute paths.
bool covers(const std::string& base, const std::string& path) {
    if (base == "/") return true;
    if (!path.starts_with(base)) return false;
    return path.size() == base.size() || path[base.size()] == '/';
}

size_t depth(const std::string& path) {
    return path == "/" ? 0 : static_cast<size_t>(std::count(path.begin(), path.end(), '/'));
}

// Absolute and free of ".", ".." and repeated slashes, without consulting the filesystem.
std::string lexical_absolute(const std::string& path) {
    std::string abs = path;
    if (abs.front() != '/') {
        char cwd[PATH_MAX];
        if (!::getcwd(cwd, sizeof cwd)) throw_errno(path);
        abs = std::string(cwd) + "/" + path;
    }
    std::vector<std::string_view> parts;
    std::string_view rest(abs);
    while (!rest.empty()) {
        size_t slash = rest.find('/');
        std::string_view part = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
            continue;
        }
        parts.push_back(part);
    }
    std::string out;
    for (auto part : parts) {
        out += '/';
        out += part;
    }
    return out.empty() ? "/" : out;
}

struct TableIndex {
    std::unordered_map<int, size_t> by_id;
    std::unordered_map<int, std::vector<size_t>> children;  // by parent id, in table order
    std::vector<size_t> tops;  // mounts whose parent is not in the table: the root

    explicit TableIndex(const MountTable& table) {
        for (size_t i = 0; i < table.size(); ++i) by_id.emplace(table[i].id, i);
        for (size_t i = 0; i < table.size(); ++i) {
            const MountEntry& e = table[i];
            if (e.parent_id == e.id || !by_id.contains(e.parent_id))
                tops.push_back(i);
            else
                children[e.parent_id].push_back(i);
        }
    }

    const MountEntry* parent(const MountTable& table, const MountEntry& e) const {
        if (e.parent_id == e.id) return nullptr;
        auto it = by_id.find(e.parent_id);
        return it == by_id.end() ? nullptr : &table[it->second];
    }
};

// How many mounts this one is stacked on at the same mount point.
size_t stack_level(const MountTable& table, const TableIndex& index, const MountEntry& e) {
    size_t level = 0;
    for (const MountEntry* up = index.parent(table, e);
         up && up->target == e.target && level < table.size(); up = index.parent(table, *up))
        ++level;
    return level;
}

}  // namespace

std::string resolve_mount_path(const std::string& path, bool lenient) {
    if (path.empty()) throw SysError(ENOENT, path);
    if (char* real = ::realpath(path.c_str(), nullptr)) {
        std::string out(real);
        std::free(real);
        return out;
    }
    if (!lenient) throw_errno(path);
    std::string abs = lexical_absolute(path);
    if (abs == "/") return abs;
    size_t slash = abs.rfind('/');
    std::string parent = resolve_mount_path(slash == 0 ? "/" : abs.substr(0, slash), true);
    return (parent == "/" ? "" : parent) + abs.substr(slash);
}

int visible_mount_index(const MountTable& table, const std::string& resolved) {
    TableIndex index(table);
    // Walk down from the root. Among the children of a mount that cover the path, the one with
    // the shortest target hides the others: had it existed when they were attached, their mount
    // points would have been looked up in it and they would be its children. A mount on the
    // same target as its parent (stacked) is the shortest of all. Ties: the later entry.
    int current = -1;
    const std::vector<size_t>* candidates = &index.tops;
    static const std::vector<size_t> none;
    for (size_t steps = 0; steps <= table.size(); ++steps) {
        int best = -1;
        for (size_t i : *candidates) {
            const std::string& target = table[i].target;
            if (!covers(target, resolved)) continue;
            if (best < 0 || depth(target) <= depth(table[static_cast<size_t>(best)].target))
                best = static_cast<int>(i);
        }
        if (best < 0) break;
        current = best;
        auto it = index.children.find(table[static_cast<size_t>(best)].id);
        candidates = it == index.children.end() ? &none : &it->second;
    }
    return current;
}

std::vector<MountEntry> mounts_under(const MountTable& table, const std::string& resolved) {
    TableIndex index(table);
    struct Key {
        size_t depth, level, pos;
    };
    std::vector<Key> keys;
    for (size_t i = 0; i < table.size(); ++i)
        if (covers(resolved, table[i].target))
            keys.push_back({depth(table[i].target), stack_level(table, index, table[i]), i});
    std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
        if (a.depth != b.depth) return a.depth > b.depth;
        if (a.level != b.level) return a.level > b.level;
        return a.pos > b.pos;
    });
    std::vector<MountEntry> out;
    out.reserve(keys.size());
    for (const Key& k : keys) out.push_back(table[k.pos]);
    return out;
}

MountEntry find_mount(const std::string& path) {
    std::string resolved = resolve_mount_path(path, false);
    MountTable table = read_mount_table();
    int i = visible_mount_index(table, resolved);
    if (i < 0) throw SysError(ENOENT, path);
    return table[static_cast<size_t>(i)];
}

std::vector<MountEntry> mounts_under(const std::string& path) {
    std::string resolved = resolve_mount_path(path, true);
    return mounts_under(read_mount_table(), resolved);
}

bool is_mountpoint(const std::string& path) {
    std::string resolved = resolve_mount_path(path, true);
    MountTable table = read_mount_table();
    int i = visible_mount_index(table, resolved);
    return i >= 0 && table[static_cast<size_t>(i)].target == resolved;
}

}  // namespace sk
