// Reading a directory through its descriptor with getdents64, the one way every area lists
// directories: no path is resolved again, no DIR stream is allocated, and the d_type the
// filesystem reports saves a stat for most entries.
#pragma once

#include <dirent.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace sk {

// Calls fn(name, d_type, d_ino) for every entry but "." and ".." from the descriptor's
// current offset to the end (d_type is DT_UNKNOWN where the filesystem does not say). name
// views the entry's NUL-terminated d_name, valid during the call. fn may return false to
// stop early. Returns 0 or an errno value.
template <class Fn>
int for_each_entry(int fd, Fn&& fn) {
    // 64 KiB: a directory of a thousand entries in one call; on the stack, so that a callback
    // may list another directory.
    alignas(struct dirent64) char buf[64 * 1024];
    for (;;) {
        ssize_t n = ::getdents64(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return 0;
        for (ssize_t off = 0; off < n;) {
            auto* d = reinterpret_cast<struct dirent64*>(buf + off);
            off += d->d_reclen;
            const char* nm = d->d_name;
            if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0'))) continue;
            std::string_view name(nm);
            auto type = static_cast<unsigned char>(d->d_type);
            auto ino = static_cast<uint64_t>(d->d_ino);
            if constexpr (std::is_void_v<std::invoke_result_t<Fn&, std::string_view,
                                                              unsigned char, uint64_t>>) {
                fn(name, type, ino);
            } else if (!fn(name, type, ino)) {
                return 0;
            }
        }
    }
}

struct DirEntry {
    uint64_t ino;
    unsigned char type;  // DT_* (DT_UNKNOWN when the filesystem does not say)
    std::string name;
};

// Every entry of the directory open as `fd` except "." and "..", from its current offset
// (a descriptor just opened: all of them), in the order the filesystem returns them.
// Returns 0 or an errno value.
int read_dir(int fd, std::vector<DirEntry>& out);

// Every entry of the open directory dirfd from its beginning, whatever was read from it
// before (its offset is moved). Throws SysError naming `label` (dirfd's path).
std::vector<DirEntry> list_dir(int dirfd, const std::string& label);

// Sorts entries by inode number: on most filesystems that is the order in which inodes lie
// on disk, which makes a walk over a cold cache read the inode tables sequentially.
void sort_by_inode(std::vector<DirEntry>& entries);

}  // namespace sk
