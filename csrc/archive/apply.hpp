// Applying a layer tar stream into a directory, safely: see apply_tar() in
// storagekit/_native.pyi for the contract. Plain C++, callable by other areas.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "whiteout/whiteout.hpp"

namespace sk {

struct ApplyOptions {
    whiteout::Dialect dialect = whiteout::Dialect::none;
    bool same_owner = true;
    // The parents' own directories, uppermost first, stored in `dialect` (overlay, aufs):
    // where a hardlink's target that this layer lacks is copied up from (lower_copy.cpp).
    std::vector<std::string> lowers;
    // The most file data (declared sizes, holes included) one stream may create; 0: no
    // limit. A few KB of sparse or compressed tar can declare a TiB.
    uint64_t max_size = 0;
};

struct ApplyResult {
    uint64_t size = 0;        // regular-file data bytes written
    uint64_t entries = 0;     // tar entries read, whiteouts and skipped ones included
    std::string diff_id;      // "sha256:<hex>" of the whole decompressed stream
    std::string compression;  // "none", "gzip", "bzip2", "xz", "zstd"
};

// Reads the (possibly compressed) tar stream from fd and applies it under the directory
// `root`. Throws ArchiveError for a corrupt or hostile stream, SysError for a failed system
// call; entries applied before the failure stay.
ApplyResult apply_tar(int fd, const std::string& root, const ApplyOptions& options);

}  // namespace sk
