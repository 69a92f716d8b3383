// Directories of the layer being applied, opened inside its root (see in_root.hpp), with
// the most recent one kept open: consecutive tar entries nearly always share a parent, so
// most entries cost no path resolution at all.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/unique_fd.hpp"

namespace sk {

class RootDirs {
public:
    // An open directory, and what a file created in it gets without being told.
    struct Dir {
        int fd = -1;
        gid_t child_gid = 0;        // the group of new entries (setgid directories pass theirs)
        bool plain_mode = false;    // new modes are just mode & ~umask (no default ACL)
    };

    RootDirs(int rootfd, std::string label);

    // The directory at relative path `dir` ("" = the root), resolved inside the root.
    // Missing directories are created (mode 0755) when `create`; otherwise fd is -1 for a
    // missing one. The fd stays valid until the next call or forget().
    // Throws ArchiveError when a component is not a directory or is a dangling symlink.
    const Dir& get(std::string_view dir, bool create);

    // An entry at `path` was removed or replaced: drop the cached directory if it was that
    // entry or below it (or reached through it, as a symlink).
    void forget(std::string_view path);

    const std::string& label() const { return label_; }
    std::string label_of(std::string_view path) const;

private:
    int open_dir(const std::string& dir, bool create);
    int create_dirs(const std::string& dir);
    Dir describe(int fd, const std::string& dir) const;
    // Throws for errno after a failed open of `dir`.
    [[noreturn]] void not_a_dir(const std::string& dir) const;

    int root_;
    std::string label_;
    Dir root_dir_;
    Dir none_;
    std::string cached_path_;
    UniqueFd cached_;
    Dir cached_dir_;
};

}  // namespace sk
