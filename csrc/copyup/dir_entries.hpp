// Reading a directory through its fd with getdents64: no path is resolved again, and the
// d_type the filesystem reports saves a stat for most entries.
#pragma once

#include <dirent.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sk {

struct DirEntry {
    uint64_t ino;
    unsigned char type;  // DT_* (DT_UNKNOWN when the filesystem does not say)
    std::string name;
};

// Every entry of the directory open as `fd` except "." and "..", in the order the filesystem
// returns them. Returns 0 or an errno value.
int read_dir(int fd, std::vector<DirEntry>& out);

// Sorts entries by inode number: on most filesystems that is the order in which inodes lie
// on disk, which makes a walk over a cold cache read the inode tables sequentially.
void sort_by_inode(std::vector<DirEntry>& entries);

}  // namespace sk
