// The metadata of a thin pool, as dm-thin keeps it: a superblock; a two-level mapping btree
// (device id -> root of that device's btree of virtual block -> data block << 24 | time); a
// device details btree (device id -> mapped_blocks, transaction_id, creation_time,
// snapshotted_time); and the data and metadata space maps.
//
// Every change goes into the open transaction; commit() makes it durable and atomic: all new
// blocks are written and synced, then the superblock. A crash at any point leaves the previous
// commit readable. Not thread-safe: the pool serialises calls.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "thin/block_cache.hpp"
#include "thin/btree.hpp"
#include "thin/error.hpp"
#include "thin/space_map.hpp"
#include "thin/transaction.hpp"

namespace sk::thin {

struct DeviceInfo {
    uint64_t mapped_blocks = 0;
    uint64_t transaction_id = 0;
    uint32_t creation_time = 0;
    uint32_t snapshotted_time = 0;
    bool changed = false;  // details to write at the next commit
};

struct Mapping {
    uint64_t data_block;
    uint32_t time;
};

class Metadata {
public:
    // Write an empty pool (the superblock is zeroed first, so a failed format is not a pool).
    static std::unique_ptr<Metadata> format(const std::string& path, uint32_t data_block_sectors,
                                            uint64_t nr_data_blocks, size_t cache_blocks);
    // Open existing metadata; throws ValueErr for anything that is not a usable superblock.
    static std::unique_ptr<Metadata> open(const std::string& path, bool read_only,
                                          size_t cache_blocks);
    ~Metadata();

    const std::string& path() const { return file_.path(); }
    int fd() const { return file_.fd(); }

    // Devices.
    const std::map<uint32_t, DeviceInfo>& devices() const { return devices_; }
    const DeviceInfo* device(uint32_t id) const;
    void create_thin(uint32_t id);
    void create_snap(uint32_t id, uint32_t origin);
    void delete_device(uint32_t id);

    // Mappings of one device (which must exist).
    std::optional<Mapping> find(uint32_t dev, uint64_t vblock);
    void find_range(uint32_t dev, uint64_t lo, uint64_t hi,
                    const std::function<void(uint64_t, Mapping)>& fn);
    // Map vblock to a data block the caller holds a reference to (from alloc_data_block);
    // a previous mapping is released. True if vblock was unmapped.
    bool insert(uint32_t dev, uint64_t vblock, uint64_t data_block);
    // Unmap vblock (releasing its data block); false if it was not mapped.
    bool remove(uint32_t dev, uint64_t vblock);
    // The block may be shared with a snapshot: it was mapped before the device's last snapshot.
    bool maybe_shared(uint32_t dev, const Mapping& m) const;
    std::optional<uint64_t> highest_mapped(uint32_t dev);

    // Data space.
    std::optional<uint64_t> alloc_data_block();
    // Give back a block from alloc_data_block that was never mapped (its data write failed).
    void release_data_block(uint64_t b) { data_sm_.dec(b); }
    uint64_t data_nr_blocks() const { return data_sm_.nr_blocks(); }
    uint64_t data_nr_free() const { return data_sm_.nr_free(); }
    uint32_t data_ref_count(uint64_t b) const { return data_sm_.count(b); }
    void extend_data(uint64_t nr_blocks);
    // Data blocks whose count reached zero since the last call (some may be in use again).
    std::vector<uint64_t> take_freed_data_blocks();

    uint64_t meta_nr_blocks() const { return meta_sm_.nr_blocks(); }
    uint64_t meta_nr_free() const { return meta_sm_.nr_free(); }
    uint32_t data_block_sectors() const { return data_block_sectors_; }
    uint32_t time() const { return time_; }

    // Transactions.
    uint64_t transaction_id() const { return trans_id_; }
    void set_transaction_id(uint64_t current, uint64_t next);  // EINVAL on mismatch
    // Keep a read-only copy of the metadata as of now (commits first); EBUSY if one is held.
    void reserve_metadata_snap(const std::function<void()>& before_superblock);
    void release_metadata_snap();  // EINVAL if none is held
    uint64_t held_root() const { return held_root_; }
    bool needs_check() const { return flags_ & kNeedsCheckFlag; }
    // Record in the committed superblock that the metadata needs checking.
    void set_needs_check();

    bool changed() const { return changed_; }
    // Grows with every change to the open transaction (to tell whether a failed operation
    // left it half-changed).
    uint64_t mutations() const { return touches_ + meta_sm_.changes() + data_sm_.changes(); }
    // Metadata blocks allocated in the open transaction.
    uint64_t transaction_blocks() const { return tm_.blocks_allocated(); }
    // before_superblock runs after the new blocks are synced, before the superblock is
    // written (the pool syncs its data device there).
    void commit(const std::function<void()>& before_superblock = {});
    uint64_t commits() const { return commits_; }
    uint64_t last_commit_blocks_written() const { return last_commit_blocks_; }
    uint64_t blocks_written() const { return cache_.blocks_written(); }
    // Between operations: keep the block cache within bounds.
    void end_operation() { cache_.trim(); }

    // Whole-tree walks (for reports and tests).
    void walk_mappings(uint32_t dev, const std::function<void(uint64_t, Mapping)>& fn);
    uint64_t mapping_tree_nodes(uint32_t dev);

private:
    class DataRefs;
    class SubtreeRefs;

    Metadata(const std::string& path, bool read_only, size_t cache_blocks, uint64_t meta_blocks,
             uint64_t data_blocks);
    void load(const uint8_t* sb);
    void build_superblock(uint8_t* p) const;
    uint64_t root_of(uint32_t dev);
    uint64_t private_root(uint32_t dev);
    void set_root(uint32_t dev, uint64_t root);
    void write_details();
    void require_writable() const;
    // An id create_thin or create_snap may give: in range and not taken.
    void require_new_id(uint32_t id) const;
    Error no_mapping_tree(uint32_t dev) const;
    void touch() {
        changed_ = true;
        touches_++;
    }

    MetaFile file_;
    BlockCache cache_;
    SpaceMap meta_sm_;
    SpaceMap data_sm_;
    Transaction tm_;
    std::unique_ptr<DataRefs> data_refs_;
    std::unique_ptr<SubtreeRefs> subtree_refs_;
    Btree bottom_;   // per-device: vblock -> block_time
    Btree top_;      // dev id -> bottom root
    Btree details_;  // dev id -> device details

    uint32_t flags_ = 0;
    uint8_t uuid_[16] = {};
    uint32_t version_ = kMetadataVersion;
    uint32_t time_ = 0;
    uint64_t trans_id_ = 0;
    uint64_t held_root_ = 0;
    uint64_t mapping_root_ = 0;
    uint64_t details_root_ = 0;
    uint32_t data_block_sectors_ = 0;

    std::map<uint32_t, DeviceInfo> devices_;
    // Bottom roots of devices whose top-level path is private to this transaction.
    std::unordered_map<uint32_t, uint64_t> private_roots_;
    bool changed_ = false;
    uint64_t touches_ = 0;
    uint64_t commits_ = 0;
    uint64_t written_at_commit_ = 0;
    uint64_t last_commit_blocks_ = 0;
    std::vector<uint8_t> committed_sb_;
};

}  // namespace sk::thin
