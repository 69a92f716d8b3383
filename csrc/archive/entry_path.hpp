// Turning a tar entry name into a path relative to the layer root, or refusing it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sk {

// Longest normalised path accepted (PATH_MAX minus its NUL) and longest component
// (NAME_MAX). Depth is bounded by them: at most 2048 directory levels.
inline constexpr std::size_t kMaxEntryPath = 4095;
inline constexpr std::size_t kMaxEntryName = 255;

struct EntryPath {
    std::string path;          // "a/b/c"; "" is the root itself
    std::size_t base_pos = 0;  // where the last component starts

    bool is_root() const { return path.empty(); }
    std::string_view parent() const {
        return base_pos ? std::string_view(path).substr(0, base_pos - 1) : std::string_view();
    }
    std::string_view base() const { return std::string_view(path).substr(base_pos); }
};

// Strips leading "/" and "./", collapses "//" and "." and resolves ".." lexically.
// Throws ArchiveError (the message names `raw`) when ".." would climb above the root, or a
// component or the whole path is too long.
EntryPath normalize_entry_path(std::string_view raw, const char* what = "entry");

}  // namespace sk
