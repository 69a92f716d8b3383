// Stable inode numbers: every real inode (device, inode number) of a branch is given a union
// inode number the first time it is seen, and keeps it for the life of the mount, like aufs's
// xino table. A copy-up maps the new upper inode to the number of the lower one, so a file
// keeps its st_ino when it moves up.
//
// The number first given is the same on every mount of the same branches, as kernel
// overlay's with xino: the real inode number in the low 48 bits, above it the filesystem's
// place among the branches' filesystems (1 for the top branch's, counting in branch order).
// Real inodes outside those filesystems (mounts inside a branch) or with numbers of 48 bits
// or more get numbers of this mount only, counted from `first` (they never reach bit 48, so
// the two kinds never meet).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <unordered_map>

#include "common/inode_key.hpp"

namespace sk::union_fs {

class Xino {
public:
    static constexpr unsigned kInoBits = 48;

    explicit Xino(uint64_t first) : next_(first) {}

    // The filesystem of a branch, in branch order (the first call for each device counts).
    void add_fs(dev_t dev) {
        if (fs_.size() < (size_t{1} << (64 - kInoBits)) - 1) fs_.try_emplace(dev, fs_.size() + 1);
    }
    // The number a real inode is given on every mount of these branches; 0 when it has none.
    uint64_t stable(dev_t dev, ino_t ino) const {
        auto it = fs_.find(dev);
        if (it == fs_.end() || static_cast<uint64_t>(ino) >> kInoBits) return 0;
        return it->second << kInoBits | static_cast<uint64_t>(ino);
    }

    uint64_t get(dev_t dev, ino_t ino) {
        auto [it, fresh] = map_.try_emplace(key(dev, ino), 0);
        if (fresh) {
            uint64_t v = stable(dev, ino);
            it->second = v ? v : next_++;
        }
        return it->second;
    }
    uint64_t find(dev_t dev, ino_t ino) const {
        auto it = map_.find(key(dev, ino));
        return it == map_.end() ? 0 : it->second;
    }
    void set(dev_t dev, ino_t ino, uint64_t v) { map_[key(dev, ino)] = v; }
    // The real inode is gone: a new inode reusing its number is a different file.
    void erase(dev_t dev, ino_t ino) { map_.erase(key(dev, ino)); }
    // A number no real inode has (node ids of superseded nodes).
    uint64_t fresh() { return next_++; }

private:
    static InodeKey key(dev_t d, ino_t i) {
        return {static_cast<uint64_t>(d), static_cast<uint64_t>(i)};
    }

    std::unordered_map<InodeKey, uint64_t, InodeKeyHash> map_;
    std::unordered_map<dev_t, uint64_t> fs_;
    uint64_t next_;
};

}  // namespace sk::union_fs
