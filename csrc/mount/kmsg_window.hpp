// Kernel log lines printed while an operation ran.
//
// Some filesystems explain a refused mount only in the kernel log (overlayfs prints "failed to
// resolve '/x': -2" with pr_err, not into the fs context). Opening /dev/kmsg and skipping to its
// end before the operation lets the error path collect what was printed meanwhile. The kernel
// does not say which task printed a line, so a concurrent failure elsewhere with the same
// prefix can show up too; callers use this only to enrich an error message.
#pragma once

#include <string>

#include "common/unique_fd.hpp"

namespace sk {

class KmsgWindow {
public:
    // Starts the window now. Without /dev/kmsg (or permission to read it) the window is empty.
    KmsgWindow();

    // Lines printed since the window started whose text starts with `prefix` (such as
    // "overlayfs: "), at error level or worse when there are any, else at warning level,
    // joined with "; ". Consumes them.
    std::string take(const std::string& prefix);

private:
    UniqueFd fd_;
};

}  // namespace sk
