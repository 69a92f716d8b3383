// Space maps on disk. Both kinds store 2-bit counts in bitmap blocks and counts above 2 in a
// ref-count btree (u64 block -> u32 count). The data space map finds its bitmaps through a
// btree (bitmap index -> index entry); the metadata space map through one index block.
//
// Saving runs at commit, after every other metadata change: it rewrites (shadows) only the
// bitmaps whose counts moved. Saving the metadata space map allocates and frees metadata
// blocks, which changes that same map, so it repeats until nothing else moves.
#pragma once

#include <cstdint>

#include "thin/space_map.hpp"
#include "thin/transaction.hpp"

namespace sk::thin {

// The 32 bytes at the start of a superblock's 128-byte space map root field.
struct SmRoot {
    uint64_t nr_blocks = 0, nr_allocated = 0, bitmap_root = 0, ref_count_root = 0;
    static SmRoot decode(const uint8_t* p);
    void encode(uint8_t* p) const;  // writes the whole 128-byte field
};

void load_data_sm(Transaction& tm, const SmRoot& root, SpaceMap& sm);
void load_metadata_sm(Transaction& tm, const SmRoot& root, SpaceMap& sm);

// Fresh structures for a newly formatted pool (every bitmap is then dirty).
void create_data_sm(Transaction& tm, SpaceMap& sm);
void create_metadata_sm(Transaction& tm, SpaceMap& sm);

void save_data_sm(Transaction& tm, SpaceMap& sm);
void save_metadata_sm(Transaction& tm, SpaceMap& sm);

SmRoot sm_root(const SpaceMap& sm);

}  // namespace sk::thin
