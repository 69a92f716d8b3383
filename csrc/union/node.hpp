// What the engine knows about one inode of the union: where its entry lives in the branch
// stack, the names the kernel reached it by, and how it is open.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "union/dir_index.hpp"

namespace sk::union_fs {

struct Node;
using NodePtr = std::shared_ptr<Node>;

struct NodeName {
    NodePtr parent;
    std::string name;
};

struct FileHandle;

struct Node {
    Node() = default;
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;
    ~Node() {
        // Someone may still hold the index for a moment; it must not point back here.
        if (index) index->orphan();
    }

    uint64_t id = 0;       // FUSE node id; 0 for a node the kernel was never told about
    uint64_t ino = 0;      // st_ino in the union
    uint64_t nlookup = 0;  // the kernel's references
    mode_t type = 0;       // S_IFMT bits
    // Names of the inode in the union; a directory has one, the root none. The last one is
    // used to reach the entry in the branches.
    std::vector<NodeName> names;
    bool removed = false;  // no name left: only open files still reach it

    int branch = 0;           // topmost branch holding the entry
    std::vector<int> layers;  // directories: the branches merged into it, top first
    uint64_t gen = 0;         // layout generation `branch` and `layers` belong to

    // The upper copy was opened for writing or truncated: its data may differ from the
    // lower file it came from.
    bool upper_written = false;
    // Counts copy-ups, so that files opened on the lower entry notice the move.
    std::atomic<uint64_t> moves{0};

    // Open files: in passthrough mode every open of the inode shares one backing file.
    int pt_count = 0;
    int pt_id = 0;
    dev_t pt_dev = 0;
    ino_t pt_ino = 0;
    int cached_count = 0;
    std::vector<FileHandle*> files;

    struct stat last {};  // attributes last reported

    // Directories: the directory in the writable branch, opened when first needed by it or
    // by a directory below it (each is opened from its parent's, never by path; it stays
    // the same inode wherever renames move it), and the merged index of the read-only
    // branches (built when first needed, dropped when the cache is full).
    UniqueFd upper_dir;
    std::shared_ptr<DirIndex> index;

    bool is_dir() const { return S_ISDIR(type); }
};

// An open regular file. Read/write through the daemon use fd; in passthrough mode the kernel
// does the I/O and fd serves fsync, fallocate, lseek and copy_file_range.
struct FileHandle {
    NodePtr node;
    // The file I/O goes to. A read-only open of a lower file switches to the upper copy once
    // the entry is copied up (fds stay open until release: a read may still be using one).
    std::atomic<int> fd{-1};
    std::mutex fds_mu;
    std::vector<UniqueFd> fds;
    int flags = 0;
    bool writable = false;
    bool passthrough = false;
    std::atomic<bool> on_lower{false};  // fd is the lower file (a read-only open before copy-up)
    std::atomic<uint64_t> moves_seen{0};  // node->moves when fd was opened
};

// A directory listing, merged once at opendir.
struct MergedEntry {
    std::string name;
    uint64_t ino;
    uint32_t type;    // DT_*
    int branch = -1;  // where the entry was found (-1 for "." and "..")
};

struct DirHandle {
    NodePtr node;
    std::vector<MergedEntry> entries;
    uint64_t changes = 0;  // Engine's change count when listed
};

}  // namespace sk::union_fs
