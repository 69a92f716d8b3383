// The transaction manager: every metadata block changed in a transaction is first "shadowed"
// to a block allocated in that transaction (copy-on-write), so the blocks of the last committed
// state are never overwritten. A shadowed block is then changed in place until the commit.
//
// Reference counts make sharing work: a block referenced from several places (a snapshot's
// mapping subtree, a held metadata snapshot) has a count above one, and shadowing it copies it
// even if it was allocated in this transaction.
#pragma once

#include <cstdint>
#include <vector>

#include "thin/block_cache.hpp"
#include "thin/space_map.hpp"

namespace sk::thin {

class Transaction {
public:
    Transaction(BlockCache& cache, SpaceMap& sm, const std::string& path)
        : cache_(cache), sm_(sm), path_(path), fresh_(sm.nr_blocks(), false) {}

    const uint8_t* read(uint64_t b, BlockKind kind) { return cache_.read(b, kind); }

    // A new zeroed block owned by the caller (count 1). ENOSPC when metadata is full.
    uint64_t new_block(BlockKind kind, uint8_t** data);
    // Writable version of b. *was_shared: b had other references, so the caller now holds
    // a copy and must add a reference to everything the copy points to.
    uint64_t shadow(uint64_t b, BlockKind kind, uint8_t** data, bool* was_shared);
    // Writable in place: only for a block allocated in this transaction and not shared.
    bool is_private_fresh(uint64_t b) const { return fresh_[b] && sm_.count(b) == 1; }
    uint8_t* modify(uint64_t b, BlockKind kind) { return cache_.modify(b, kind); }

    void inc(uint64_t b) { sm_.inc(b); }
    // Drop one reference; a block that reaches zero is forgotten by the cache.
    uint32_t dec(uint64_t b);
    uint32_t ref_count(uint64_t b) const { return sm_.count(b); }

    // Called once the superblock of the transaction is on disk.
    void begin_next();
    uint64_t blocks_allocated() const { return allocated_; }

private:
    uint64_t alloc();

    BlockCache& cache_;
    SpaceMap& sm_;
    const std::string& path_;
    std::vector<bool> fresh_;  // allocated in this transaction
    std::vector<uint64_t> fresh_list_;
    uint64_t allocated_ = 0;
};

}  // namespace sk::thin
