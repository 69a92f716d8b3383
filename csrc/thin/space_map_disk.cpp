#include "thin/space_map_disk.hpp"

#include <cerrno>
#include <string>
#include <vector>

#include "common/syserror.hpp"
#include "thin/btree.hpp"
#include "thin/error.hpp"

namespace sk::thin {
namespace {

constexpr uint32_t kRefCountValueSize = 4;

void apply_overflow_changes(Transaction& tm, SpaceMap& sm) {
    Btree rc(tm, kRefCountValueSize);
    for (uint64_t b : sm.take_overflow_changes()) {
        uint32_t c = sm.count(b);
        if (c > 2) {
            uint8_t v[4];
            store32(v, c);
            sm.ref_count_root = rc.insert(sm.ref_count_root, b, v);
        } else {
            sm.ref_count_root = rc.remove(sm.ref_count_root, b);
        }
    }
}

void load_overflow(Transaction& tm, SpaceMap& sm) {
    Btree rc(tm, kRefCountValueSize);
    rc.walk(sm.ref_count_root, [&](uint64_t b, const uint8_t* v) { sm.load_overflow(b, load32(v)); });
}

// Make loc a block of this transaction (new, or already one), without filling it.
void relocate(Transaction& tm, uint64_t& loc, BlockKind kind) {
    if (loc != 0 && tm.is_private_fresh(loc)) return;
    uint8_t* p;
    uint64_t nb = tm.new_block(kind, &p);
    if (loc != 0) tm.dec(loc);
    loc = nb;
}

void encode_into(Transaction& tm, SpaceMap& sm, uint32_t i) {
    uint8_t* p = tm.modify(sm.bitmap_locations()[i], BlockKind::bitmap);
    sm.encode_bitmap(i, p, &sm.bitmap_nr_free()[i], &sm.bitmap_none_free_before()[i]);
}

void decode_index_entry(SpaceMap& sm, uint32_t i, const uint8_t* e) {
    sm.bitmap_locations()[i] = load64(e);
    sm.bitmap_nr_free()[i] = load32(e + 8);
    sm.bitmap_none_free_before()[i] = load32(e + 12);
}

void encode_index_entry(SpaceMap& sm, uint32_t i, uint8_t* e) {
    store64(e, sm.bitmap_locations()[i]);
    store32(e + 8, sm.bitmap_nr_free()[i]);
    store32(e + 12, sm.bitmap_none_free_before()[i]);
}

void load_bitmaps(Transaction& tm, SpaceMap& sm, const std::string& what) {
    for (uint32_t i = 0; i < sm.nr_bitmaps(); i++) {
        uint64_t loc = sm.bitmap_locations()[i];
        if (loc == 0)
            throw Error(Fault::damaged,
                        what + " space map: bitmap " + std::to_string(i) + " missing");
        sm.decode_bitmap(i, tm.read(loc, BlockKind::bitmap));
    }
}

}  // namespace

SmRoot SmRoot::decode(const uint8_t* p) {
    return SmRoot{load64(p), load64(p + 8), load64(p + 16), load64(p + 24)};
}

void SmRoot::encode(uint8_t* p) const {
    std::memset(p, 0, kSpaceMapRootSize);
    store64(p, nr_blocks);
    store64(p + 8, nr_allocated);
    store64(p + 16, bitmap_root);
    store64(p + 24, ref_count_root);
}

SmRoot sm_root(const SpaceMap& sm) {
    return SmRoot{sm.nr_blocks(), sm.nr_allocated(), sm.bitmap_root, sm.ref_count_root};
}

void load_data_sm(Transaction& tm, const SmRoot& root, SpaceMap& sm) {
    sm.bitmap_root = root.bitmap_root;
    sm.ref_count_root = root.ref_count_root;
    Btree index(tm, kIndexEntrySize);
    index.walk(root.bitmap_root, [&](uint64_t i, const uint8_t* e) {
        if (i < sm.nr_bitmaps()) decode_index_entry(sm, static_cast<uint32_t>(i), e);
    });
    load_bitmaps(tm, sm, "data");
    load_overflow(tm, sm);
    sm.load_committed();
}

void load_metadata_sm(Transaction& tm, const SmRoot& root, SpaceMap& sm) {
    if (sm.nr_bitmaps() > kMaxMetadataBitmaps)
        throw Error(Fault::damaged, "metadata space map: too many blocks");
    sm.bitmap_root = root.bitmap_root;
    sm.ref_count_root = root.ref_count_root;
    const uint8_t* idx = tm.read(root.bitmap_root, BlockKind::index);
    for (uint32_t i = 0; i < sm.nr_bitmaps(); i++)
        decode_index_entry(sm, i, idx + kMetadataIndexHeader + size_t{i} * kIndexEntrySize);
    load_bitmaps(tm, sm, "metadata");
    load_overflow(tm, sm);
    sm.load_committed();
}

void create_data_sm(Transaction& tm, SpaceMap& sm) {
    sm.bitmap_root = Btree(tm, kIndexEntrySize).create_empty();
    sm.ref_count_root = Btree(tm, kRefCountValueSize).create_empty();
    sm.mark_all_bitmaps_dirty();
}

void create_metadata_sm(Transaction& tm, SpaceMap& sm) {
    sm.ref_count_root = Btree(tm, kRefCountValueSize).create_empty();
    sm.bitmap_root = 0;  // allocated by the first save
    sm.mark_all_bitmaps_dirty();
}

void save_data_sm(Transaction& tm, SpaceMap& sm) {
    apply_overflow_changes(tm, sm);
    if (!sm.any_dirty_bitmap()) return;
    Btree index(tm, kIndexEntrySize);
    auto& dirty = sm.dirty_bitmaps();
    for (uint32_t i = 0; i < sm.nr_bitmaps(); i++) {
        if (!dirty[i]) continue;
        relocate(tm, sm.bitmap_locations()[i], BlockKind::bitmap);
        encode_into(tm, sm, i);
        uint8_t e[kIndexEntrySize];
        encode_index_entry(sm, i, e);
        sm.bitmap_root = index.insert(sm.bitmap_root, i, e);
    }
    sm.clear_dirty_bitmaps();
}

void save_metadata_sm(Transaction& tm, SpaceMap& sm) {
    std::vector<bool> moved(sm.nr_bitmaps(), false);
    bool index_moved = false;
    for (;;) {
        bool progress = false;
        if (sm.has_overflow_changes()) {
            apply_overflow_changes(tm, sm);
            progress = true;
        }
        auto& dirty = sm.dirty_bitmaps();
        for (uint32_t i = 0; i < sm.nr_bitmaps(); i++) {
            if (!dirty[i] || moved[i]) continue;
            relocate(tm, sm.bitmap_locations()[i], BlockKind::bitmap);
            moved[i] = true;
            progress = true;
        }
        if (!index_moved) {
            relocate(tm, sm.bitmap_root, BlockKind::index);
            index_moved = true;
            progress = true;
        }
        if (!progress) break;
    }
    // Every count is final now.
    for (uint32_t i = 0; i < sm.nr_bitmaps(); i++)
        if (moved[i]) encode_into(tm, sm, i);
    uint8_t* idx = tm.modify(sm.bitmap_root, BlockKind::index);
    std::memset(idx, 0, kBlockSize);
    for (uint32_t i = 0; i < sm.nr_bitmaps(); i++)
        encode_index_entry(sm, i, idx + kMetadataIndexHeader + size_t{i} * kIndexEntrySize);
    sm.clear_dirty_bitmaps();
}

}  // namespace sk::thin
