#include "thin/disk_format.hpp"

#include "thin/crc32c.hpp"

namespace sk::thin {
namespace {

uint32_t xor_of(BlockKind kind) {
    switch (kind) {
        case BlockKind::superblock: return kSuperblockXor;
        case BlockKind::node: return kBtreeNodeXor;
        case BlockKind::bitmap: return kBitmapXor;
        case BlockKind::index: return kIndexXor;
    }
    return 0;
}

const char* name_of(BlockKind kind) {
    switch (kind) {
        case BlockKind::superblock: return "superblock";
        case BlockKind::node: return "btree node";
        case BlockKind::bitmap: return "space map bitmap";
        case BlockKind::index: return "space map index";
    }
    return "block";
}

}  // namespace

uint32_t block_checksum(const uint8_t* block, BlockKind kind) {
    return crc32c_update(~0u, block + 4, kBlockSize - 4) ^ xor_of(kind);
}

void seal_block(uint8_t* block, uint64_t location, BlockKind kind) {
    store64(block + 8, location);
    store32(block, block_checksum(block, kind));
}

std::string check_block(const uint8_t* block, uint64_t location, BlockKind kind) {
    if (load32(block) != block_checksum(block, kind))
        return std::string("bad checksum in ") + name_of(kind) + " at block " +
               std::to_string(location);
    if (load64(block + 8) != location)
        return std::string(name_of(kind)) + " at block " + std::to_string(location) +
               " claims to be block " + std::to_string(load64(block + 8));
    if (kind == BlockKind::node) {
        uint32_t nr = load32(block + 16), max = load32(block + 20), vsize = load32(block + 24);
        if (nr > max || max == 0 || kNodeHeaderSize + uint64_t{max} * (8 + vsize) > kBlockSize)
            return "malformed btree node at block " + std::to_string(location);
    }
    return {};
}

}  // namespace sk::thin
