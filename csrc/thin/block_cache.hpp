// Metadata block I/O: a file (or block device) of 4 KiB blocks behind an LRU cache that
// verifies blocks as they are read and seals (checksums) them as they are written.
//
// Dirty blocks are always blocks allocated in the open transaction, which no committed
// superblock references, so they may be written out early (when the cache is over capacity)
// without harming the committed state. The superblock is written by the caller, never here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/unique_fd.hpp"
#include "thin/disk_format.hpp"

namespace sk::thin {

class MetaFile {
public:
    MetaFile(std::string path, bool read_only);
    const std::string& path() const { return path_; }
    bool read_only() const { return read_only_; }
    int fd() const { return fd_.get(); }
    uint64_t size_bytes() const;
    void read_block(uint64_t b, uint8_t* buf) const;
    void write_block(uint64_t b, const uint8_t* buf);
    void sync();

private:
    std::string path_;
    bool read_only_;
    UniqueFd fd_;
};

struct AlignedFree {
    void operator()(uint8_t* p) const;
};
using BlockBuf = std::unique_ptr<uint8_t, AlignedFree>;
BlockBuf alloc_block_buf();

class BlockCache {
public:
    BlockCache(MetaFile& file, size_t capacity) : file_(file), capacity_(capacity) {}

    // A verified block. Pointers stay valid until trim(), discard() or drop_all().
    const uint8_t* read(uint64_t b, BlockKind kind);
    // A zero-filled block that will be written at the next flush.
    uint8_t* create(uint64_t b, BlockKind kind);
    // An existing block to change in place (must be one allocated in this transaction).
    uint8_t* modify(uint64_t b, BlockKind kind);
    // Forget a freed block: its pending contents need not reach the disk.
    void discard(uint64_t b);
    // Write every dirty block.
    void flush();
    // Evict least recently used blocks down to the capacity (between operations only).
    void trim();
    // Forget everything (after an aborted transaction).
    void drop_all();

    uint64_t blocks_written() const { return blocks_written_; }
    size_t dirty_count() const { return dirty_; }

private:
    struct Entry {
        BlockBuf data;
        BlockKind kind;
        bool dirty = false;
        std::list<uint64_t>::iterator lru;
    };
    Entry& touch(uint64_t b, Entry& e);
    Entry& insert(uint64_t b, BlockKind kind);
    void write_out(uint64_t b, Entry& e);

    MetaFile& file_;
    size_t capacity_;
    std::unordered_map<uint64_t, Entry> entries_;
    std::list<uint64_t> lru_;  // front = most recent
    size_t dirty_ = 0;
    uint64_t blocks_written_ = 0;
};

}  // namespace sk::thin
