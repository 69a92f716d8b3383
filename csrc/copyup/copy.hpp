// Copy-up: copying files, directories and whole trees with everything a container layer needs
// kept: data (shared by reflink where the filesystem can, holes kept), mode including
// setuid/setgid/sticky, owner, nanosecond times, every xattr (capabilities, POSIX ACLs,
// trusted.*, user.*), symlinks, fifos, sockets, devices and hardlinks inside a tree.
//
// Plain C++ (no Python): failures throw sk::SysError carrying errno and the source and/or
// destination path as given (for a tree, the path of the entry that failed below it).
#pragma once

#include <sys/stat.h>

#include <cstdint>

namespace sk::copyup {

struct FsCaps;  // copy_data.hpp

// How the data of a regular file was copied.
enum class DataMethod { none, reflink, copy_file_range, readwrite };

// "none", "reflink", "copy_file_range" or "readwrite".
const char* method_name(DataMethod m);

struct CopyStats {
    uint64_t files = 0;      // regular files (a hardlinked inode counts once)
    uint64_t dirs = 0;
    uint64_t symlinks = 0;
    uint64_t specials = 0;   // fifos, sockets, char and block devices
    uint64_t hardlinks = 0;  // extra names made with link() for inodes already copied
    uint64_t bytes = 0;      // data bytes of regular files
    uint64_t reflinked = 0;  // regular files whose data was shared with FICLONE

    CopyStats& operator+=(const CopyStats& o);
};

// Copies one entry `src_name` of directory `src_dirfd` (AT_FDCWD for the current directory)
// to `dst_name` of `dst_dirfd`, which must not exist: a regular file with its data, a
// directory without its contents, a symlink, fifo, socket or device. Neither name is
// followed if it is a symlink. Returns how the data went (DataMethod::none for anything but a
// non-empty regular file).
// `caps`: what earlier copies between the same two filesystems found unsupported (FICLONE on
// ext4...), kept by a caller that makes many copies so that each one does not try again.
// `dst_st`: filled with the stat of the copy once it is complete.
DataMethod copy_entry_at(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                         bool reflink = true, FsCaps* caps = nullptr,
                         struct stat* dst_st = nullptr);

// Copies the tree rooted at directory `src_name` to `dst_name`, which must not exist, with
// hardlinks inside the tree kept as hardlinks and directory times set after their contents.
// Mounts below the source are not entered: their mount-point directory is copied empty.
// `threads`: how many threads copy (0: one per CPU, at most 2).
CopyStats copy_tree_at(int src_dirfd, const char* src_name, int dst_dirfd, const char* dst_name,
                       bool reflink = true, unsigned threads = 0);

}  // namespace sk::copyup
