// Extended attributes, security.capability and POSIX ACLs included. Setting or removing one
// copies the entry up. Each call names the entry by its parent directory (opened without
// following symlinks) and its name there, never following the entry itself: the *xattrat
// system calls where the kernel has them, else the l* calls on /proc/self/fd/<parent>/<name>
// (copyup/xattr_io.hpp).
#include <cerrno>
#include <string>

#include "copyup/xattr_io.hpp"
#include "union/engine.hpp"

namespace sk::unionfs {

ssize_t Engine::getxattr(uint64_t id, const std::string& xname, std::string& value, size_t size) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return -ENOENT;
    if (int e = refresh(*n)) return -e;
    DirRef d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return -e;
    value.resize(size);
    long r = xattr::get_raw(xattr::Node::at(d.get(), name.c_str()), xname.c_str(),
                            size ? value.data() : nullptr, size);
    if (r < 0) return r;
    value.resize(size ? static_cast<size_t>(r) : 0);
    return r;
}

ssize_t Engine::listxattr(uint64_t id, std::string& value, size_t size) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return -ENOENT;
    if (int e = refresh(*n)) return -e;
    DirRef d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return -e;
    value.resize(size);
    long r = xattr::list_raw(xattr::Node::at(d.get(), name.c_str()), size ? value.data() : nullptr,
                             size);
    if (r < 0) return r;
    value.resize(size ? static_cast<size_t>(r) : 0);
    return r;
}

int Engine::setxattr(uint64_t id, const std::string& xname, const std::string& v, int flags) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (int e = copy_up(*n)) return e;
    DirRef d;
    std::string name;
    if (int e = open_parent(*n, 0, d, name)) return e;
    return -xattr::set(xattr::Node::at(d.get(), name.c_str()), xname.c_str(), v, flags);
}

int Engine::removexattr(uint64_t id, const std::string& xname) {
    auto lk = lock();
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (int e = refresh(*n)) return e;
    DirRef d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return e;
    // Nothing to remove: no copy-up for that.
    long r = xattr::get_raw(xattr::Node::at(d.get(), name.c_str()), xname.c_str(), nullptr, 0);
    if (r < 0) return static_cast<int>(-r);
    if (int e = copy_up(*n)) return e;
    if (int e = open_parent(*n, 0, d, name)) return e;
    return -xattr::remove(xattr::Node::at(d.get(), name.c_str()), xname.c_str());
}

}  // namespace sk::unionfs
