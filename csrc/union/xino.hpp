// Stable inode numbers: every real inode (device, inode number) of a branch is given a union
// inode number the first time it is seen, and keeps it for the life of the mount, like aufs's
// xino table. A copy-up maps the new upper inode to the number of the lower one, so a file
// keeps its st_ino when it moves up.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <unordered_map>

#include "common/inode_key.hpp"

namespace sk::union_fs {

class Xino {
public:
    explicit Xino(uint64_t first) : next_(first) {}

    uint64_t get(dev_t dev, ino_t ino) {
        auto [it, fresh] = map_.try_emplace(key(dev, ino), 0);
        if (fresh) it->second = next_++;
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
    uint64_t next_;
};

}  // namespace sk::union_fs
