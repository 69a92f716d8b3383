// The branch stack of a union mount: directories stacked top first, the first one writable
// (unless the whole union is read-only), the others read-only branches whose whiteouts count
// (aufs "ro+wh"). Every path inside a branch is resolved beneath its root without following
// any symlink, so a branch changed under the engine can never lead it outside.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"

namespace sk::union_fs {

struct Branch {
    std::string path;
    UniqueFd root;
    dev_t dev = 0;
    bool writable = false;
    bool whiteouts = true;  // ".wh." entries of this branch hide entries of lower branches
};

// aufs's limit: NAME_MAX minus room for the doubly whited-out temporary names.
inline constexpr size_t kMaxNameLen = 242;

class BranchStack {
public:
    // specs: "dir" or aufs's "dir=rw", "dir=ro", "dir=ro+wh", "dir=rr". Without a permission
    // the first branch is rw and the others ro+wh, as Docker mounted them; readonly makes
    // every branch read-only. Throws SysError for a branch that is not a directory.
    BranchStack(const std::vector<std::string>& specs, bool readonly);

    size_t size() const { return branches_.size(); }
    const Branch& operator[](size_t i) const { return branches_[i]; }
    bool has_rw() const { return !branches_.empty() && branches_[0].writable; }

    // Opens directory `rel` ("" for the root) of branch b (O_DIRECTORY) into out. Returns 0,
    // or the errno (ENOENT when it does not resolve to a directory beneath the root).
    int open_dir(size_t b, const std::string& rel, UniqueFd& out) const;

private:
    std::vector<Branch> branches_;
};

// Opens directory `name` (one name, no "/") of directory dirfd into out, resolved beneath it
// without following a symlink: 0, or the errno (ENOENT when it is not a directory there).
int open_subdir(int dirfd, const std::string& name, UniqueFd& out);

// "a/b" + "c" -> "a/b/c"; "" + "c" -> "c".
std::string join_rel(const std::string& dir, std::string_view name);

}  // namespace sk::union_fs
