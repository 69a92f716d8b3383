// Change scan of a layer against its parent, the way Docker's archive.ChangesDirs reports it,
// and the sizes that go with it. Plain C++: failures throw sk::SysError with the path.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sk::changes {

// Values as Docker's archive.ChangeModify / ChangeAdd / ChangeDelete.
enum class Kind : int { modify = 0, add = 1, del = 2 };

struct Change {
    std::string path;  // absolute within the layer: "/a/b"
    Kind kind;
};

// Compares the tree `layer` with the tree `parent` (none: everything is added). An entry is
// modified when its type, mode, uid, gid, rdev or xattrs differ, when (not for directories)
// its size, mtime or link count differ (mtimes are equal when exactly equal or, as tar keeps only
// seconds, when the seconds match and one side has no nanoseconds), when a symlink's target
// differs, and a directory other than the root is modified when anything inside it changed
// or, empty on both sides, when its mtime differs (it was removed and made again).
// A deleted directory is one change; an added one lists its whole subtree. Mounts below either
// root are not entered. Sorted by path (bytewise).
std::vector<Change> scan(const std::string& layer, const std::optional<std::string>& parent);

// (bytes of regular-file data, number of inodes) of the tree at root, the root included; each
// hardlinked inode once. Mounts below root count as their mount-point directory only.
std::pair<uint64_t, uint64_t> tree_size(const std::string& root);

// Sum of st_size of the regular files among `paths` (absolute within root, resolved without
// leaving it), each inode once; missing paths count 0.
uint64_t paths_size(const std::string& root, const std::vector<std::string>& paths);

}  // namespace sk::changes
