// The pool's data device: a regular file or a block device addressed in bytes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/unique_fd.hpp"

namespace sk::thin {

class DataFile {
public:
    DataFile(std::string path, bool read_only);
    const std::string& path() const { return path_; }
    uint64_t size_bytes() const;

    void read(uint64_t off, uint8_t* buf, size_t len) const;
    void write(uint64_t off, const uint8_t* buf, size_t len);
    // Make [off, off+len) read as zeros (a hole in a regular file).
    void zero(uint64_t off, uint64_t len);
    // Copy len bytes inside the device (copy_file_range: a reflink on xfs/btrfs).
    void copy(uint64_t src, uint64_t dst, uint64_t len);
    // Tell the device the range is unused (punch a hole / BLKDISCARD); best effort.
    void discard(uint64_t off, uint64_t len);
    int fd() const { return fd_.get(); }
    // fdatasync if anything was written since the last sync (thread-safe with writes).
    void sync();

private:
    void write_zeros(uint64_t off, uint64_t len);

    std::string path_;
    UniqueFd fd_;
    bool block_device_ = false;
    std::atomic<bool> dirty_ = false;
};

}  // namespace sk::thin
