// aufs's bookkeeping at the top of a writable branch ("doubly whited-out" names, never
// visible in the union and left out of a layer's diff).
#pragma once

namespace sk::union_fs {

inline constexpr const char* kWhiteoutBase = ".wh..wh.aufs";  // whiteouts are links of it
inline constexpr const char* kPlinkDir = ".wh..wh.plnk";      // pseudo-links
inline constexpr const char* kOrphanDir = ".wh..wh.orph";     // copies being made

}  // namespace sk::union_fs
