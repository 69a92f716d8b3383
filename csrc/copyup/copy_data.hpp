// Copying the data of one regular file: FICLONE, else copy_file_range, else read/write, with
// holes kept.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <vector>

#include "copyup/copy.hpp"

namespace sk::copyup {

// What the filesystems of one copy were found not to support, so that the next files do not
// pay for a call that is bound to fail. Shared by the threads of a tree copy.
struct FsCaps {
    std::atomic<bool> no_reflink{false};
    std::atomic<bool> no_copy_range{false};
    // Without reflink, copy_file_range is only used where it cannot share extents either
    // (xfs, btrfs and others clone through it): 0 not known yet, 1 safe, -1 not safe.
    std::atomic<int> copy_range_copies{0};
};

// Copies st.st_size bytes of src_fd (whose stat is st) into the empty file dst_fd. With
// reflink false no extent ends up shared with the source. Throws NodeError on failure.
DataMethod copy_file_data(int src_fd, int dst_fd, const struct stat& st, bool reflink,
                          FsCaps& caps, std::vector<char>& buf);

}  // namespace sk::copyup
