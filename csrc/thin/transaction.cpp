#include "thin/transaction.hpp"

#include <cerrno>
#include <cstring>

#include "common/syserror.hpp"
#include "thin/error.hpp"

namespace sk::thin {

uint64_t Transaction::alloc() {
    auto b = sm_.alloc();
    if (!b) throw Error(Fault::no_space, "the metadata space is exhausted", path_);
    fresh_[*b] = true;
    fresh_list_.push_back(*b);
    allocated_++;
    return *b;
}

uint64_t Transaction::new_block(BlockKind kind, uint8_t** data) {
    uint64_t b = alloc();
    *data = cache_.create(b, kind);
    return b;
}

uint64_t Transaction::shadow(uint64_t b, BlockKind kind, uint8_t** data, bool* was_shared) {
    uint32_t count = sm_.count(b);
    *was_shared = count > 1;
    if (fresh_[b] && count == 1) {
        *data = cache_.modify(b, kind);
        return b;
    }
    const uint8_t* src = cache_.read(b, kind);
    uint64_t nb = alloc();
    uint8_t* dst = cache_.create(nb, kind);
    std::memcpy(dst, src, kBlockSize);
    dec(b);
    *data = dst;
    return nb;
}

uint32_t Transaction::dec(uint64_t b) {
    uint32_t c = sm_.dec(b);
    if (c == 0) cache_.discard(b);
    return c;
}

void Transaction::begin_next() {
    for (uint64_t b : fresh_list_) fresh_[b] = false;
    fresh_list_.clear();
    allocated_ = 0;
}

}  // namespace sk::thin
