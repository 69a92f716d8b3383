#include "thin/space_map.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace sk::thin {

namespace {

// Are the n bytes at p (n a multiple of 8) all zero?
bool zero_bytes(const uint8_t* p, size_t n) {
    uint64_t any = 0;
    for (size_t k = 0; k < n; k += 8) {
        uint64_t w;
        std::memcpy(&w, p + k, 8);
        any |= w;
    }
    return any == 0;
}

}  // namespace

SpaceMap::SpaceMap(uint64_t nr_blocks) { extend(nr_blocks); }

uint32_t SpaceMap::nr_bitmaps() const {
    return static_cast<uint32_t>((nr_blocks_ + kEntriesPerBitmap - 1) / kEntriesPerBitmap);
}

void SpaceMap::extend(uint64_t nr_blocks) {
    if (nr_blocks < nr_blocks_) throw std::logic_error("space map cannot shrink");
    uint32_t old_bitmaps = nr_bitmaps();
    nr_blocks_ = nr_blocks;
    small_.resize(nr_blocks, 0);
    committed_.resize((nr_blocks + 63) / 64, 0);
    touched_bits_.resize((nr_blocks + 63) / 64, 0);
    uint32_t n = nr_bitmaps();
    bitmap_loc_.resize(n, 0);
    nr_free_.resize(n, 0);
    none_free_before_.resize(n, 0);
    dirty_bitmaps_.resize(n, false);
    // The last old bitmap gains entries too.
    for (uint32_t i = old_bitmaps ? old_bitmaps - 1 : 0; i < n; i++)
        if (!dirty_bitmaps_[i]) {
            dirty_bitmaps_[i] = true;
            nr_dirty_bitmaps_++;
        }
}

void SpaceMap::note_change(uint64_t b, uint32_t old_c, uint32_t new_c) {
    changes_++;
    if (!((touched_bits_[b >> 6] >> (b & 63)) & 1)) {
        touched_bits_[b >> 6] |= uint64_t{1} << (b & 63);
        touched_.push_back(b);
    }
    if (std::min(old_c, 3u) != std::min(new_c, 3u)) {
        uint32_t i = static_cast<uint32_t>(b / kEntriesPerBitmap);
        if (!dirty_bitmaps_[i]) {
            dirty_bitmaps_[i] = true;
            nr_dirty_bitmaps_++;
        }
    }
    if (old_c > 2 || new_c > 2) overflow_changed_.insert(b);
    if (old_c == 0 && new_c != 0) nr_allocated_++;
    if (old_c != 0 && new_c == 0) nr_allocated_--;
}

void SpaceMap::set(uint64_t b, uint32_t c) {
    if (b >= nr_blocks_) throw std::out_of_range("space map: block out of range");
    uint32_t old_c = count(b);
    if (old_c == c) return;
    if (c >= kBig) {
        small_[b] = kBig;
        big_[b] = c;
    } else {
        if (small_[b] == kBig) big_.erase(b);
        small_[b] = static_cast<uint8_t>(c);
    }
    note_change(b, old_c, c);
}

uint32_t SpaceMap::dec(uint64_t b) {
    uint32_t c = count(b);
    if (c == 0) throw std::logic_error("space map: freeing a free block");
    set(b, c - 1);
    return c - 1;
}

std::optional<uint64_t> SpaceMap::alloc() {
    if (nr_allocated_ >= nr_blocks_) return std::nullopt;
    for (int pass = 0; pass < 2; pass++) {
        uint64_t begin = pass == 0 ? cursor_ : 0, end = pass == 0 ? nr_blocks_ : cursor_;
        for (uint64_t b = begin; b < end; b++) {
            if (small_[b] != 0 || committed_in_use(b)) continue;
            set(b, 1);
            cursor_ = b + 1 < nr_blocks_ ? b + 1 : 0;
            return b;
        }
    }
    return std::nullopt;
}

void SpaceMap::clear_dirty_bitmaps() {
    std::fill(dirty_bitmaps_.begin(), dirty_bitmaps_.end(), false);
    nr_dirty_bitmaps_ = 0;
}

void SpaceMap::mark_all_bitmaps_dirty() {
    std::fill(dirty_bitmaps_.begin(), dirty_bitmaps_.end(), true);
    nr_dirty_bitmaps_ = static_cast<uint32_t>(dirty_bitmaps_.size());
}

std::set<uint64_t> SpaceMap::take_overflow_changes() {
    std::set<uint64_t> out;
    out.swap(overflow_changed_);
    return out;
}

void SpaceMap::mark_committed() {
    for (uint64_t b : touched_) {
        uint64_t bit = uint64_t{1} << (b & 63);
        if (count(b) > 0)
            committed_[b >> 6] |= bit;
        else
            committed_[b >> 6] &= ~bit;
        touched_bits_[b >> 6] &= ~bit;
    }
    touched_.clear();
}

void SpaceMap::load_committed() {
    // Every pool open runs this over every data block: skip the free ones 64 at a time.
    for (uint64_t b = 0; b < nr_blocks_;) {
        if ((b & 63) == 0 && nr_blocks_ - b >= 64 && zero_bytes(&small_[b], 64)) {
            b += 64;
            continue;
        }
        if (small_[b]) committed_[b >> 6] |= uint64_t{1} << (b & 63);
        b++;
    }
    for (uint64_t b : touched_) touched_bits_[b >> 6] &= ~(uint64_t{1} << (b & 63));
    touched_.clear();
    overflow_changed_.clear();
    clear_dirty_bitmaps();
}

// Entry j of a bitmap: bit 2j (little-endian bit order) is the high bit of the 2-bit count,
// bit 2j+1 the low bit.
void SpaceMap::encode_bitmap(uint32_t i, uint8_t* block, uint32_t* nr_free,
                             uint32_t* none_free_before) const {
    uint8_t* bits = block + kBitmapHeaderSize;
    std::memset(bits, 0, kBlockSize - kBitmapHeaderSize);
    uint64_t first = uint64_t{i} * kEntriesPerBitmap;
    uint64_t end = std::min<uint64_t>(first + kEntriesPerBitmap, nr_blocks_);
    uint32_t free = 0, first_free = kEntriesPerBitmap;
    for (uint64_t b = first; b < end; b++) {
        uint32_t j = static_cast<uint32_t>(b - first);
        uint8_t s = small_[b];
        uint32_t c = s > 3 ? 3 : s;
        if (c == 0) {
            free++;
            if (first_free == kEntriesPerBitmap) first_free = j;
            continue;
        }
        uint32_t hi = 2 * j, lo = 2 * j + 1;
        if (c & 2) bits[hi >> 3] |= static_cast<uint8_t>(1u << (hi & 7));
        if (c & 1) bits[lo >> 3] |= static_cast<uint8_t>(1u << (lo & 7));
    }
    *nr_free = free;
    *none_free_before = first_free == kEntriesPerBitmap ? static_cast<uint32_t>(end - first)
                                                        : first_free;
}

void SpaceMap::decode_bitmap(uint32_t i, const uint8_t* block) {
    const uint8_t* bits = block + kBitmapHeaderSize;
    uint64_t first = uint64_t{i} * kEntriesPerBitmap;
    uint64_t end = std::min<uint64_t>(first + kEntriesPerBitmap, nr_blocks_);
    static_assert(kEntriesPerBitmap % 32 == 0);
    for (uint64_t b = first; b < end; b++) {
        uint32_t j = static_cast<uint32_t>(b - first);
        // Opening a pool decodes every bitmap, and a pool is mostly free space: 32 entries
        // (one 64-bit word of bits) that are free on disk and here need no work.
        if ((j & 31) == 0 && end - b >= 32 && zero_bytes(bits + j / 4, 8) &&
            zero_bytes(&small_[b], 32)) {
            b += 31;
            continue;
        }
        uint32_t hi = 2 * j, lo = 2 * j + 1;
        uint32_t c = (((bits[hi >> 3] >> (hi & 7)) & 1) << 1) | ((bits[lo >> 3] >> (lo & 7)) & 1);
        if (small_[b] == 0 && c != 0) nr_allocated_++;
        if (small_[b] != 0 && c == 0) nr_allocated_--;
        if (small_[b] == kBig) big_.erase(b);
        small_[b] = static_cast<uint8_t>(c);
    }
}

// Load-time only: no change tracking (the counts are the committed ones).
void SpaceMap::load_overflow(uint64_t b, uint32_t c) {
    if (b >= nr_blocks_ || c < 3) return;
    if (small_[b] == 0) nr_allocated_++;
    if (c >= kBig) {
        small_[b] = kBig;
        big_[b] = c;
    } else {
        small_[b] = static_cast<uint8_t>(c);
    }
}

}  // namespace sk::thin
