// The primitives of a copy: one node at a time, from an open source or (dirfd, name) to
// (dirfd, name) of the destination. Metadata goes on in the one order that keeps it all:
// owner first (chown clears setuid/setgid and security.capability), then xattrs, then mode,
// then times (a directory's times only once its contents are in place).
//
// They throw NodeError; callers add the paths.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <vector>

#include "common/unique_fd.hpp"
#include "copyup/copy_data.hpp"

namespace sk::copyup {

// What a node gets when it is created in one of the copy's own directories (no default ACL,
// no setgid until they are finished), so that calls which would change nothing are left out.
struct CreateDefaults {
    uid_t uid;
    gid_t gid;
    mode_t umask;
};
// The caller's; nullopt when the umask cannot be read without changing it.
std::optional<CreateDefaults> create_defaults();

struct NodeCtx {
    bool reflink = true;
    FsCaps* caps = nullptr;
    std::vector<char>* buf = nullptr;
    // The new node may have inherited xattrs (a default ACL of a directory outside the copy):
    // remove those the source does not have.
    bool strip_inherited = false;
    // Set when the parent is one of the copy's own unfinished directories.
    const CreateDefaults* defaults = nullptr;
    // When set, copy_regular fills it with the stat of the finished copy.
    struct stat* dst_st = nullptr;
};

// Opens a source for reading without updating its atime where allowed.
UniqueFd open_src_file(int dirfd, const char* name);
UniqueFd open_src_dir(int dirfd, const char* name);

// stat of an open directory, and whether it is the root of a mount.
struct DirStat {
    struct stat st;
    bool mount_root;
};
DirStat stat_dir(int fd);

DataMethod copy_regular(int src_fd, const struct stat& st, int dst_dirfd, const char* dst_name,
                        const NodeCtx& ctx);
void copy_symlink(int src_dirfd, const char* src_name, const struct stat& st, int dst_dirfd,
                  const char* dst_name, const NodeCtx& ctx);
// fifos, sockets, char and block devices.
void copy_special(int src_dirfd, const char* src_name, const struct stat& st, int dst_dirfd,
                  const char* dst_name, const NodeCtx& ctx);

// Creates the directory (private until finish_dir) and gives it its owner; returns it open.
UniqueFd make_dir(const struct stat& st, int dst_dirfd, const char* dst_name, const NodeCtx& ctx);
// xattrs, mode and times of a directory made by make_dir, once its contents are in.
void finish_dir(int src_fd, const struct stat& st, int dst_fd);

}  // namespace sk::copyup
