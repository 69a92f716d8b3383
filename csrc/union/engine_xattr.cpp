// Extended attributes, security.capability and POSIX ACLs included. Setting or removing one
// copies the entry up. Each call goes through /proc/self/fd/<parent>/<name> with the l*
// variants: the parent was opened without following symlinks, the entry itself is not followed.
#include <sys/xattr.h>

#include <cerrno>
#include <string>

#include "union/engine.hpp"

namespace sk::unionfs {
namespace {

std::string proc_path(int dirfd, const std::string& name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

}  // namespace

ssize_t Engine::getxattr(uint64_t id, const std::string& xname, std::string& value, size_t size) {
    std::lock_guard lk(mu_);
    NodePtr n = node(id);
    if (!n) return -ENOENT;
    if (int e = refresh(*n)) return -e;
    UniqueFd d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return -e;
    value.resize(size);
    ssize_t r = ::lgetxattr(proc_path(d.get(), name).c_str(), xname.c_str(),
                            size ? value.data() : nullptr, size);
    if (r < 0) return -errno;
    value.resize(size ? static_cast<size_t>(r) : 0);
    return r;
}

ssize_t Engine::listxattr(uint64_t id, std::string& value, size_t size) {
    std::lock_guard lk(mu_);
    NodePtr n = node(id);
    if (!n) return -ENOENT;
    if (int e = refresh(*n)) return -e;
    UniqueFd d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return -e;
    value.resize(size);
    ssize_t r = ::llistxattr(proc_path(d.get(), name).c_str(), size ? value.data() : nullptr, size);
    if (r < 0) return -errno;
    value.resize(size ? static_cast<size_t>(r) : 0);
    return r;
}

int Engine::setxattr(uint64_t id, const std::string& xname, const std::string& v, int flags) {
    std::lock_guard lk(mu_);
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (int e = copy_up(*n)) return e;
    UniqueFd d;
    std::string name;
    if (int e = open_parent(*n, 0, d, name)) return e;
    std::string p = proc_path(d.get(), name);
    return ::lsetxattr(p.c_str(), xname.c_str(), v.data(), v.size(), flags) < 0 ? errno : 0;
}

int Engine::removexattr(uint64_t id, const std::string& xname) {
    std::lock_guard lk(mu_);
    NodePtr n = node(id);
    if (!n) return ENOENT;
    if (int e = refresh(*n)) return e;
    UniqueFd d;
    std::string name;
    if (int e = open_parent(*n, n->branch, d, name)) return e;
    // Nothing to remove: no copy-up for that.
    if (::lgetxattr(proc_path(d.get(), name).c_str(), xname.c_str(), nullptr, 0) < 0) return errno;
    if (int e = copy_up(*n)) return e;
    if (int e = open_parent(*n, 0, d, name)) return e;
    return ::lremovexattr(proc_path(d.get(), name).c_str(), xname.c_str()) < 0 ? errno : 0;
}

}  // namespace sk::unionfs
