// Extended attributes, security.capability and POSIX ACLs included. Setting or removing one
// copies the entry up. Each call names the entry by its parent directory (opened without
// following symlinks) and its name there, never following the entry itself: the *xattrat
// system calls where the kernel has them, else the l* calls on /proc/self/fd/<parent>/<name>
// (copyup/xattr_io.hpp).
#include <cerrno>
#include <string>

#include "copyup/xattr_io.hpp"
#include "union/engine.hpp"

namespace sk::union_fs {

namespace {

// xattr_io answers with a length or 0 (>= 0), or -errno.
int length_of(long r, size_t& len) {
    if (r < 0) return static_cast<int>(-r);
    len = static_cast<size_t>(r);
    return 0;
}

int status_of(int r) { return r < 0 ? -r : 0; }

}  // namespace

template <class Read>
int Engine::read_xattrs(uint64_t id, size_t size, std::string& value, size_t& len, Read read) {
    auto lk = lock();
    NodePtr n;
    DirRef d;
    std::string name;
    if (int e = live_entry(id, n, d, name)) return e;
    value.resize(size);
    char* buf = size ? value.data() : nullptr;
    if (int e = length_of(read(xattr::Node::at(d.get(), name.c_str()), buf), len)) return e;
    value.resize(size ? len : 0);
    return 0;
}

int Engine::getxattr(uint64_t id, const std::string& xname, size_t size, std::string& value,
                     size_t& len) {
    return read_xattrs(id, size, value, len, [&](const xattr::Node& at, char* buf) {
        return xattr::get_raw(at, xname.c_str(), buf, size);
    });
}

int Engine::listxattr(uint64_t id, size_t size, std::string& value, size_t& len) {
    return read_xattrs(id, size, value, len, [&](const xattr::Node& at, char* buf) {
        return xattr::list_raw(at, buf, size);
    });
}

int Engine::setxattr(uint64_t id, const std::string& xname, const std::string& v, int flags) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (int e = copy_up(*n)) return e;
    DirRef d;
    std::string name;
    if (int e = open_parent(*n, 0, d, name)) return e;
    return status_of(xattr::set(xattr::Node::at(d.get(), name.c_str()), xname.c_str(), v, flags));
}

int Engine::removexattr(uint64_t id, const std::string& xname) {
    auto lk = lock();
    NodePtr n;
    DirRef d;
    std::string name;
    if (int e = live_entry(id, n, d, name)) return e;
    // Nothing to remove: no copy-up for that.
    size_t len;
    long r = xattr::get_raw(xattr::Node::at(d.get(), name.c_str()), xname.c_str(), nullptr, 0);
    if (int e = length_of(r, len)) return e;
    if (int e = copy_up(*n)) return e;
    if (int e = open_parent(*n, 0, d, name)) return e;
    return status_of(xattr::remove(xattr::Node::at(d.get(), name.c_str()), xname.c_str()));
}

}  // namespace sk::union_fs
