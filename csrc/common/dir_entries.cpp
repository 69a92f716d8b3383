#include "common/dir_entries.hpp"

#include <unistd.h>

#include <algorithm>

#include "common/syserror.hpp"

namespace sk {

int read_dir(int fd, std::vector<DirEntry>& out) {
    out.clear();
    return for_each_entry(fd, [&](std::string_view name, unsigned char type, uint64_t ino) {
        out.push_back(DirEntry{ino, type, std::string(name)});
    });
}

std::vector<DirEntry> list_dir(int dirfd, const std::string& label) {
    if (::lseek(dirfd, 0, SEEK_SET) < 0) throw_errno(label);
    std::vector<DirEntry> out;
    if (int err = read_dir(dirfd, out)) throw SysError(err, label);
    return out;
}

void sort_by_inode(std::vector<DirEntry>& entries) {
    std::sort(entries.begin(), entries.end(),
              [](const DirEntry& a, const DirEntry& b) { return a.ino < b.ino; });
}

}  // namespace sk
