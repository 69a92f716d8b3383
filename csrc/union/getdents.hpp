// Reading a directory straight from getdents64, without a DIR stream: the descriptor stays
// the caller's (an index or a node keeps it for *at() calls afterwards).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdint>
#include <string_view>

namespace sk::unionfs {

// Calls fn(name, d_type, d_ino) for every entry but "." and ".." from the descriptor's
// current offset on.
template <class Fn>
void for_each_entry(int fd, Fn fn) {
    alignas(struct dirent64) char buf[32768];
    for (;;) {
        ssize_t n = ::getdents64(fd, buf, sizeof buf);
        if (n <= 0) return;
        for (ssize_t off = 0; off < n;) {
            auto* de = reinterpret_cast<struct dirent64*>(buf + off);
            off += de->d_reclen;
            std::string_view nm(de->d_name);
            if (nm == "." || nm == "..") continue;
            fn(nm, static_cast<uint8_t>(de->d_type), static_cast<ino_t>(de->d_ino));
        }
    }
}

}  // namespace sk::unionfs
