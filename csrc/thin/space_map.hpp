// A space map held in memory: the reference count of every block of a device, which blocks
// the last committed transaction uses, and what changed since (so a commit rewrites only the
// bitmaps and overflow counts that moved).
//
// Allocation never hands out a block the committed state uses, even one freed since: the
// previous transaction must stay intact until the next superblock is on disk.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "thin/disk_format.hpp"

namespace sk::thin {

class SpaceMap {
public:
    explicit SpaceMap(uint64_t nr_blocks = 0);

    uint64_t nr_blocks() const { return nr_blocks_; }
    uint64_t nr_allocated() const { return nr_allocated_; }
    uint64_t nr_free() const { return nr_blocks_ - nr_allocated_; }
    uint32_t nr_bitmaps() const;
    // Counts every change, so a caller can tell whether an operation changed anything.
    uint64_t changes() const { return changes_; }

    uint32_t count(uint64_t b) const {
        uint8_t s = small_[b];
        return s < kBig ? s : big_.at(b);
    }
    void set(uint64_t b, uint32_t c);
    void inc(uint64_t b) { set(b, count(b) + 1); }
    // Returns the new count.
    uint32_t dec(uint64_t b);

    // A block with count 0 that the committed state does not use; its count becomes 1.
    std::optional<uint64_t> alloc();
    bool committed_in_use(uint64_t b) const { return (committed_[b >> 6] >> (b & 63)) & 1; }

    // Grow to nr_blocks (new blocks free); their bitmaps become dirty.
    void extend(uint64_t nr_blocks);

    // Bookkeeping for the on-disk form.
    std::vector<uint64_t>& bitmap_locations() { return bitmap_loc_; }
    // Index entry fields of each bitmap as last encoded or loaded.
    std::vector<uint32_t>& bitmap_nr_free() { return nr_free_; }
    std::vector<uint32_t>& bitmap_none_free_before() { return none_free_before_; }
    std::vector<bool>& dirty_bitmaps() { return dirty_bitmaps_; }
    bool any_dirty_bitmap() const { return nr_dirty_bitmaps_ > 0; }
    void clear_dirty_bitmaps();
    void mark_all_bitmaps_dirty();
    // Blocks whose overflow (count > 2) entry must be written, removed or updated.
    std::set<uint64_t> take_overflow_changes();
    bool has_overflow_changes() const { return !overflow_changed_.empty(); }
    uint64_t ref_count_root = 0;
    uint64_t bitmap_root = 0;  // index btree (data) or index block (metadata)

    // The committed state is now the current one.
    void mark_committed();
    // Set by load, before any transaction: counts as they are on disk.
    void load_committed();

    // Encode bitmap i into a bitmap block body; fills nr_free and none_free_before.
    void encode_bitmap(uint32_t i, uint8_t* block, uint32_t* nr_free,
                       uint32_t* none_free_before) const;
    // Decode bitmap i; counts of 3 are placeholders until the ref-count tree is read.
    void decode_bitmap(uint32_t i, const uint8_t* block);
    // Bumps a "3" placeholder to its real count (from the ref-count tree) at load time.
    void load_overflow(uint64_t b, uint32_t c);

private:
    static constexpr uint8_t kBig = 255;
    void note_change(uint64_t b, uint32_t old_c, uint32_t new_c);

    uint64_t nr_blocks_ = 0;
    uint64_t nr_allocated_ = 0;
    std::vector<uint8_t> small_;
    std::unordered_map<uint64_t, uint32_t> big_;
    std::vector<uint64_t> committed_;  // bitset: in use by the committed state
    std::vector<uint64_t> touched_;    // blocks changed in this transaction
    std::vector<uint64_t> touched_bits_;
    std::vector<uint64_t> bitmap_loc_;
    std::vector<uint32_t> nr_free_;
    std::vector<uint32_t> none_free_before_;
    std::vector<bool> dirty_bitmaps_;
    uint32_t nr_dirty_bitmaps_ = 0;
    std::set<uint64_t> overflow_changed_;
    uint64_t cursor_ = 0;
    uint64_t changes_ = 0;
};

}  // namespace sk::thin
