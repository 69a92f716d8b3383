#include "copyup/xattr_io.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>

namespace sk::xattr {
namespace {

// The *xattrat calls share one number on every architecture with the unified syscall table;
// Debian 12's headers predate them.
#ifndef SYS_setxattrat
constexpr long SYS_setxattrat = 463;
constexpr long SYS_getxattrat = 464;
constexpr long SYS_listxattrat = 465;
constexpr long SYS_removexattrat = 466;
#endif

struct XattrArgs {
    uint64_t value;
    uint32_t size;
    uint32_t flags;
};

// Set once a *xattrat call returned ENOSYS, so later calls go straight to the fallback.
std::atomic<bool> no_xattrat{false};

bool use_at(const Node& n) { return n.fd < 0 && !no_xattrat.load(std::memory_order_relaxed); }

// "/proc/self/fd/<dirfd>/<name>": the magic link resolves the directory, the last component
// is then handled by the l*xattr call without being followed.
std::string proc_path(const Node& n) {
    if (n.dirfd == AT_FDCWD) return n.name;
    char prefix[48];
    std::snprintf(prefix, sizeof prefix, "/proc/self/fd/%d/", n.dirfd);
    return std::string(prefix) + n.name;
}

long ret(long r) { return r < 0 ? -errno : r; }

long sys_list(const Node& n, char* buf, size_t size) {
    if (n.fd >= 0) return ret(::flistxattr(n.fd, buf, size));
    if (use_at(n)) {
        long r = ::syscall(SYS_listxattrat, n.dirfd, n.name, AT_SYMLINK_NOFOLLOW, buf, size);
        if (r >= 0 || errno != ENOSYS) return ret(r);
        no_xattrat = true;
    }
    return ret(::llistxattr(proc_path(n).c_str(), buf, size));
}

long sys_get(const Node& n, const char* key, char* buf, size_t size) {
    if (n.fd >= 0) return ret(::fgetxattr(n.fd, key, buf, size));
    if (use_at(n)) {
        XattrArgs a{reinterpret_cast<uintptr_t>(buf), static_cast<uint32_t>(size), 0};
        long r = ::syscall(SYS_getxattrat, n.dirfd, n.name, AT_SYMLINK_NOFOLLOW, key, &a,
                           sizeof a);
        if (r >= 0 || errno != ENOSYS) return ret(r);
        no_xattrat = true;
    }
    return ret(::lgetxattr(proc_path(n).c_str(), key, buf, size));
}

// Reads with a growing buffer: the size can change between the size query and the read.
template <class Call>
int read_sized(std::string& out, Call call) {
    if (out.capacity() < 256) out.reserve(256);
    out.resize(out.capacity());
    for (;;) {
        long r = call(out.data(), out.size());
        if (r >= 0) {
            out.resize(static_cast<size_t>(r));
            return 0;
        }
        if (r != -ERANGE) return static_cast<int>(r);
        long need = call(nullptr, 0);
        if (need < 0) return static_cast<int>(need);
        out.resize(static_cast<size_t>(need) + 256);
    }
}

}  // namespace

long get_raw(const Node& n, const char* key, char* buf, size_t size) {
    return sys_get(n, key, buf, size);
}

long list_raw(const Node& n, char* buf, size_t size) { return sys_list(n, buf, size); }

int list(const Node& n, std::string& buf) {
    int r = read_sized(buf, [&](char* b, size_t s) { return sys_list(n, b, s); });
    if (r == -ENOTSUP) {
        buf.clear();
        return 0;
    }
    return r;
}

int get(const Node& n, const char* key, std::string& value) {
    return read_sized(value, [&](char* b, size_t s) { return sys_get(n, key, b, s); });
}

int set(const Node& n, const char* key, std::string_view value, int flags) {
    if (n.fd >= 0)
        return static_cast<int>(ret(::fsetxattr(n.fd, key, value.data(), value.size(), flags)));
    if (use_at(n)) {
        XattrArgs a{reinterpret_cast<uintptr_t>(value.data()), static_cast<uint32_t>(value.size()),
                    static_cast<uint32_t>(flags)};
        long r = ::syscall(SYS_setxattrat, n.dirfd, n.name, AT_SYMLINK_NOFOLLOW, key, &a, sizeof a);
        if (r >= 0 || errno != ENOSYS) return static_cast<int>(ret(r));
        no_xattrat = true;
    }
    return static_cast<int>(
        ret(::lsetxattr(proc_path(n).c_str(), key, value.data(), value.size(), flags)));
}

int remove(const Node& n, const char* key) {
    if (n.fd >= 0) return static_cast<int>(ret(::fremovexattr(n.fd, key)));
    if (use_at(n)) {
        long r = ::syscall(SYS_removexattrat, n.dirfd, n.name, AT_SYMLINK_NOFOLLOW, key);
        if (r >= 0 || errno != ENOSYS) return static_cast<int>(ret(r));
        no_xattrat = true;
    }
    return static_cast<int>(ret(::lremovexattr(proc_path(n).c_str(), key)));
}

std::vector<std::string_view> split_names(const std::string& buf) {
    std::vector<std::string_view> names;
    size_t pos = 0;
    while (pos < buf.size()) {
        size_t end = buf.find('\0', pos);
        if (end == std::string::npos) end = buf.size();
        if (end > pos) names.emplace_back(buf.data() + pos, end - pos);
        pos = end + 1;
    }
    return names;
}

int read_all(const Node& n, std::vector<std::pair<std::string, std::string>>& out) {
    out.clear();
    std::string names;
    if (int r = list(n, names)) return r;
    for (std::string_view name : split_names(names)) {
        std::string key(name), value;
        int r = get(n, key.c_str(), value);
        if (r == -ENODATA) continue;  // removed since it was listed
        if (r) return r;
        out.emplace_back(std::move(key), std::move(value));
    }
    std::sort(out.begin(), out.end());
    return 0;
}

}  // namespace sk::xattr
