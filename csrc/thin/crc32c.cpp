// CRC-32C with the SSE4.2 crc32 instruction when the CPU has it (checked once at run time),
// else slice-by-8 tables. Both compute the same reflected polynomial 0x82f63b78.
#include "thin/crc32c.hpp"

#include <array>
#include <cstring>

namespace sk::thin {
namespace {

constexpr uint32_t kPoly = 0x82f63b78u;

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
    Tables t{};
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
        t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (size_t s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    return t;
}

constexpr Tables kTables = make_tables();

uint32_t update_tables(uint32_t crc, const uint8_t* p, size_t len) {
    while (len >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);  // little-endian host: byte 0 is the low byte
        w ^= crc;
        crc = kTables[7][w & 0xff] ^ kTables[6][(w >> 8) & 0xff] ^ kTables[5][(w >> 16) & 0xff] ^
              kTables[4][(w >> 24) & 0xff] ^ kTables[3][(w >> 32) & 0xff] ^
              kTables[2][(w >> 40) & 0xff] ^ kTables[1][(w >> 48) & 0xff] ^ kTables[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) crc = (crc >> 8) ^ kTables[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t update_sse42(uint32_t crc, const uint8_t* p,
                                                         size_t len) {
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = static_cast<uint32_t>(c);
    while (len--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

bool have_sse42() {
    static const bool yes = __builtin_cpu_supports("sse4.2");
    return yes;
}
#endif

}  // namespace

uint32_t crc32c_update(uint32_t crc, const void* data, size_t len) {
    auto p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
    if (have_sse42()) return update_sse42(crc, p, len);
#endif
    return update_tables(crc, p, len);
}

}  // namespace sk::thin
