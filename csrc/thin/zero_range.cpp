#include "thin/zero_range.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace sk::thin {
namespace {

bool all_zero(const uint8_t* p, size_t n) {
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// Reading first keeps a never-written block unmapped: a write of zeros would allocate it.
void overwrite_nonzero(Pool& pool, uint32_t dev, uint64_t offset, uint64_t len) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(pool.block_bytes(), 1 << 20));
    std::vector<uint8_t> buf(chunk);
    std::vector<uint8_t> zeros;
    while (len) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, chunk - offset % chunk));
        pool.read(dev, offset, buf.data(), n);
        if (!all_zero(buf.data(), n)) {
            zeros.resize(n);
            pool.write(dev, offset, zeros.data(), n);
        }
        offset += n;
        len -= n;
    }
}

}  // namespace

void zero_range(Pool& pool, uint32_t dev, uint64_t offset, uint64_t len, bool unmap) {
    if (!unmap) {
        overwrite_nonzero(pool, dev, offset, len);
        return;
    }
    uint64_t bs = pool.block_bytes(), end = offset + len;
    uint64_t first = (offset + bs - 1) / bs * bs, last = end / bs * bs;
    if (first >= last) {  // no whole block inside
        overwrite_nonzero(pool, dev, offset, len);
        return;
    }
    overwrite_nonzero(pool, dev, offset, first - offset);
    pool.discard(dev, first, last - first);
    overwrite_nonzero(pool, dev, last, end - last);
}

}  // namespace sk::thin
