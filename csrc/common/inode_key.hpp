// An inode's identity, (device, inode number), as a hash key: the hardlinks a copy, a size
// count or an export meets, and the union engine's inode numbers.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace sk {

struct InodeKey {
    uint64_t dev = 0;
    uint64_t ino = 0;
    bool operator==(const InodeKey&) const = default;
};

inline InodeKey inode_key(const struct stat& st) {
    return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

struct InodeKeyHash {
    size_t operator()(const InodeKey& k) const noexcept {
        // Inode numbers of one filesystem are dense and small: spread them (Fibonacci
        // hashing) before mixing the device in.
        return std::hash<uint64_t>()(k.ino * 0x9e3779b97f4a7c15ull ^ k.dev);
    }
};

}  // namespace sk
