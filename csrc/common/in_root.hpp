// Opening paths strictly inside a directory tree: openat2() with RESOLVE_IN_ROOT, so ".."
// and absolute symlinks are resolved as if the root were "/", and RESOLVE_NO_MAGICLINKS,
// so /proc-style links cannot jump out either.
#pragma once

#include <string>

namespace sk {

// openat2(rootfd, path, flags | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
// returns the fd or -1 with errno set. Retries the kernel's EAGAIN (a concurrent rename).
int open_in_root(int rootfd, const char* path, int flags);

}  // namespace sk
