// CRC-32C (Castagnoli), the checksum of every dm-thin metadata block.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sk::thin {

// Advance a CRC-32C register over data, with no pre- or post-inversion: the caller chooses the
// seed (dm's persistent-data seeds with ~0 and never inverts the result).
uint32_t crc32c_update(uint32_t crc, const void* data, size_t len);

// The standard CRC-32C of data (seed ~0, result inverted), e.g. 0xe3069283 for "123456789".
inline uint32_t crc32c(const void* data, size_t len) {
    return ~crc32c_update(~0u, data, len);
}

}  // namespace sk::thin
