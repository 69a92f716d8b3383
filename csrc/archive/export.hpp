// Exporting a directory as an OCI layer tar: see export_tar() in storagekit/_native.pyi.
// Plain C++, callable by other areas.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "archive/tar_output.hpp"
#include "whiteout/whiteout.hpp"

namespace sk {

// As Docker's archive.ChangeType.
enum ChangeKind { kChangeModify = 0, kChangeAdd = 1, kChangeDelete = 2 };

struct ExportOptions {
    whiteout::Dialect dialect = whiteout::Dialect::none;  // how `root` stores whiteouts
    Compression compression = Compression::none;
    // Absolute paths ("/a/b") and kinds; when set, only these are written, in this order.
    std::optional<std::vector<std::pair<std::string, int>>> changes;
    // The tree the changes were found against: a modified directory that is empty on both
    // sides and differs only in its mtime (removed and made again) is written opaque.
    std::optional<std::string> parent;
};

struct ExportResult {
    uint64_t bytes = 0;    // written to fd (after compression)
    uint64_t entries = 0;
    std::string diff_id;   // "sha256:<hex>" of the uncompressed tar
};

ExportResult export_tar(const std::string& root, int fd, const ExportOptions& options);

}  // namespace sk
