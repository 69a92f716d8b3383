// Making a byte range of a thin device read as zeros, for fallocate(PUNCH_HOLE/ZERO_RANGE) on
// its file: whole data blocks are discarded (unmapped, their space given back), the partial
// blocks at either end are overwritten with zeros where they hold data.
#pragma once

#include <cstdint>

#include "thin/pool.hpp"

namespace sk::thin {

// unmap=false (a pool that ignores discards) writes zeros over the whole range instead, still
// skipping what already reads as zeros so that unmapped blocks stay unmapped.
void zero_range(Pool& pool, uint32_t dev, uint64_t offset, uint64_t len, bool unmap);

}  // namespace sk::thin
