// dm-thin's on-disk metadata format (drivers/md/dm-thin-metadata.c, drivers/md/persistent-data):
// 4 KiB little-endian blocks, each sealed with a CRC-32C whose xor constant names its type.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace sk::thin {

static_assert(std::endian::native == std::endian::little, "metadata is little-endian");

inline constexpr uint32_t kBlockSize = 4096;
inline constexpr uint32_t kSectorsPerMetaBlock = kBlockSize / 512;

// Superblock.
inline constexpr uint64_t kSuperblockLocation = 0;
inline constexpr uint64_t kSuperblockMagic = 27022010;
inline constexpr uint32_t kMetadataVersion = 2;
inline constexpr uint32_t kNeedsCheckFlag = 1;

// Checksum xor per block type.
inline constexpr uint32_t kSuperblockXor = 160774;
inline constexpr uint32_t kBtreeNodeXor = 121107;
inline constexpr uint32_t kBitmapXor = 240779;
inline constexpr uint32_t kIndexXor = 160478;

// Space maps: 2 bits per block after a 16-byte bitmap header; counts above 2 live in a
// ref-count btree. The metadata space map indexes its bitmaps from one block of 255 entries.
inline constexpr uint32_t kBitmapHeaderSize = 16;
inline constexpr uint32_t kEntriesPerBitmap = (kBlockSize - kBitmapHeaderSize) * 4;
inline constexpr uint32_t kMaxMetadataBitmaps = 255;
inline constexpr uint64_t kMaxMetadataBlocks = uint64_t{kMaxMetadataBitmaps} * kEntriesPerBitmap;
inline constexpr uint32_t kIndexEntrySize = 16;  // blocknr u64, nr_free u32, none_free_before u32
inline constexpr uint32_t kMetadataIndexHeader = 16;  // csum u32, padding u32, blocknr u64
inline constexpr uint32_t kSpaceMapRootSize = 128;

// Btree node header: csum u32, flags u32, blocknr u64, nr_entries u32, max_entries u32,
// value_size u32, padding u32; then max_entries keys (u64), then max_entries values.
inline constexpr uint32_t kNodeHeaderSize = 32;
inline constexpr uint32_t kInternalNode = 1;
inline constexpr uint32_t kLeafNode = 2;

// Mapping values pack the data block above a 24-bit time.
inline constexpr uint32_t kTimeBits = 24;
inline constexpr uint64_t kMaxDeviceId = (1u << 24) - 1;

// Device details value: mapped_blocks u64, transaction_id u64, creation_time u32,
// snapshotted_time u32.
inline constexpr uint32_t kDeviceDetailsSize = 24;

// Data block size bounds (512-byte sectors).
inline constexpr uint32_t kMinDataBlockSectors = 128;
inline constexpr uint32_t kMaxDataBlockSectors = 2097152;

// Superblock field offsets.
namespace sb {
inline constexpr size_t csum = 0, flags = 4, blocknr = 8, uuid = 16, magic = 32, version = 40,
                        time = 44, trans_id = 48, held_root = 56, data_sm_root = 64,
                        metadata_sm_root = 192, data_mapping_root = 320,
                        device_details_root = 328, data_block_size = 336,
                        metadata_block_size = 340, metadata_nr_blocks = 344, compat_flags = 352,
                        compat_ro_flags = 356, incompat_flags = 360;
}

enum class BlockKind : uint8_t { superblock, node, bitmap, index };

inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline uint32_t load32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline void store64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline void store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

inline uint64_t pack_block_time(uint64_t block, uint32_t time) {
    return (block << kTimeBits) | (time & ((1u << kTimeBits) - 1));
}
inline uint64_t unpack_block(uint64_t v) { return v >> kTimeBits; }
inline uint32_t unpack_time(uint64_t v) { return static_cast<uint32_t>(v & ((1u << kTimeBits) - 1)); }

// Checksum of a block as its validator computes it: crc32c over everything after the csum
// field, seeded with ~0, not inverted, xored with the type's constant.
uint32_t block_checksum(const uint8_t* block, BlockKind kind);

// Stamp location and checksum into a block about to be written.
void seal_block(uint8_t* block, uint64_t location, BlockKind kind);

// Empty if the block is a valid block of that kind at that location, else what is wrong.
std::string check_block(const uint8_t* block, uint64_t location, BlockKind kind);

}  // namespace sk::thin
