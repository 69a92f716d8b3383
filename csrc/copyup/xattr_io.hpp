// Extended attributes of one node, addressed either by an open fd or by (dirfd, name) without
// following a final symlink. Symlinks, fifos and devices cannot be opened safely for their
// xattrs, so they go through the *xattrat system calls (Linux 6.13), with a fallback to the
// l*xattr calls on "/proc/self/fd/<dirfd>/<name>" on older kernels.
//
// Every function returns 0 (or a size) on success and -errno on failure; callers decide which
// path to blame.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace sk::xattr {

struct Node {
    int fd = -1;              // when >= 0, the node itself
    int dirfd = -1;           // otherwise the directory holding it ...
    const char* name = nullptr;  // ... and its name there (never followed if a symlink)

    static Node of_fd(int fd) { return Node{fd, -1, nullptr}; }
    static Node at(int dirfd, const char* name) { return Node{-1, dirfd, name}; }
};

// Names of every xattr of the node, as the kernel lists them (NUL-separated in `buf`).
// A filesystem without xattr support yields an empty list.
int list(const Node& n, std::string& buf);
// Value of xattr `key` into `value`.
int get(const Node& n, const char* key, std::string& value);
int set(const Node& n, const char* key, std::string_view value, int flags = 0);
int remove(const Node& n, const char* key);

// One getxattr/listxattr call as the kernel answers it: the length (the value or list filled
// when size > 0) or -errno (-ERANGE when size is too small).
long get_raw(const Node& n, const char* key, char* buf, size_t size);
long list_raw(const Node& n, char* buf, size_t size);

// Splits a list() buffer into names.
std::vector<std::string_view> split_names(const std::string& buf);

// Every (name, value) pair of the node, sorted by name.
int read_all(const Node& n, std::vector<std::pair<std::string, std::string>>& out);

}  // namespace sk::xattr
