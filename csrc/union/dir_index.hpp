// The merged view of one directory's read-only branches, built once with one scan of each:
// for every name the topmost branch that holds it, the branches below that a directory of
// that name merges with, and which names whiteouts hide. Lookups and listings then cost the
// same with 1,000 branches as with one. This relies on the read-only branches not changing
// while they are mounted (aufs's udba=none); the writable branch is never part of an index.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.hpp"
#include "union/branches.hpp"

namespace sk::union_fs {

struct Node;
class IndexCache;

class DirIndex {
public:
    struct Slot {
        int first = -1;  // position in layers() of the topmost branch with the name; -1: hidden
        uint8_t type = 0;  // DT_* there
        // Branches further down add nothing: a non-directory or a whiteout cut them off.
        bool closed = false;
        ino_t ino = 0;     // the real inode number there
        // Positions in layers() holding the name as a directory, top first, up to the first
        // whiteout of it or non-directory below; empty unless `type` is DT_DIR. Opaque
        // markers inside those directories are not looked at here.
        std::vector<int> dirs;
    };
    using Named = std::pair<const std::string, Slot>;

    // Scans the directory of each branch in `layers` (top first, the writable branch left
    // out) that open(b, fd) opens; branches where it fails (not a directory there) hold
    // nothing.
    DirIndex(const BranchStack& br, std::vector<int> layers,
             const std::function<int(int, UniqueFd&)>& open);
    ~DirIndex();
    DirIndex(const DirIndex&) = delete;
    DirIndex& operator=(const DirIndex&) = delete;

    const std::vector<int>& layers() const { return layers_; }
    // The directory in layers()[pos]; -1 where it is missing.
    int fd(int pos) const { return fds_[pos].get(); }
    // nullptr when no branch shows the name (missing, or hidden by a whiteout).
    const Slot* find(const std::string& name) const {
        auto it = names_.find(name);
        return it == names_.end() || it->second.first < 0 ? nullptr : &it->second;
    }
    // The names the branches show, in the order a listing gives them (top branch first).
    const std::vector<const Named*>& listing() const { return order_; }
    size_t fd_count() const { return fd_count_; }
    // Its owner node is going away.
    void orphan() { owner_ = nullptr; }
    size_t name_count() const { return names_.size(); }

private:
    friend class IndexCache;
    std::vector<int> layers_;
    std::vector<UniqueFd> fds_;
    size_t fd_count_ = 0;
    std::unordered_map<std::string, Slot> names_;
    std::vector<const Named*> order_;

    // Least-recently-used bookkeeping of the cache that holds it.
    IndexCache* cache_ = nullptr;
    std::list<DirIndex*>::iterator pos_;
    Node* owner_ = nullptr;
};

// Bounds what the indexes of all directories hold (descriptors and names): the least recently
// used ones are dropped, and rebuilt when needed again.
class IndexCache {
public:
    IndexCache(size_t max_fds, size_t max_names) : max_fds_(max_fds), max_names_(max_names) {}
    ~IndexCache();

    // Registers a new index of `owner` (which holds it) as the most recently used.
    void add(DirIndex& idx, Node* owner);
    void touch(DirIndex& idx);
    // Takes the index out of the cache (it is going away, or its owner is).
    void remove(DirIndex& idx);
    // Drops least recently used indexes from their owners while over the bounds.
    void trim();
    size_t fds() const { return fds_; }
    size_t names() const { return names_; }

private:
    std::list<DirIndex*> lru_;  // most recent first
    size_t fds_ = 0, names_ = 0;
    size_t max_fds_, max_names_;
};

}  // namespace sk::union_fs
