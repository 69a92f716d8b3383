#include "archive/entry_xattrs.hpp"

#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <tuple>

#include "common/syserror.hpp"

namespace sk {
namespace {

constexpr std::size_t kXattrNameMax = 255;     // XATTR_NAME_MAX
constexpr std::size_t kXattrValueMax = 65536;  // XATTR_SIZE_MAX
constexpr std::size_t kXattrListMax = 65536;   // XATTR_LIST_MAX

const char* const kNamespaces[] = {"user.", "trusted.", "security.", "system."};

void check_name(std::string_view name) {
    bool known = false;
    for (const char* ns : kNamespaces) {
        std::string_view n(ns);
        if (name.starts_with(n) && name.size() > n.size()) known = true;
    }
    if (!known || name.size() > kXattrNameMax)
        throw ArchiveError("invalid xattr name '" + std::string(name.substr(0, 300)) + "'");
}

bool is_bookkeeping(std::string_view name) {
    return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

// POSIX.1e ACL in the kernel's xattr form (struct posix_acl_xattr_header/_entry).
bool acl_as_xattr(struct archive_entry* e, int type, std::string& out) {
    if (archive_entry_acl_reset(e, type) <= 0) return false;
    std::vector<std::tuple<uint16_t, uint32_t, uint16_t>> entries;
    int etype, perm, tag, qual;
    const char* name;
    while (archive_entry_acl_next(e, type, &etype, &perm, &tag, &qual, &name) == ARCHIVE_OK) {
        uint16_t t;
        uint32_t id = 0xffffffffu;
        switch (tag) {
            case ARCHIVE_ENTRY_ACL_USER_OBJ: t = 0x01; break;
            case ARCHIVE_ENTRY_ACL_USER: t = 0x02, id = static_cast<uint32_t>(qual); break;
            case ARCHIVE_ENTRY_ACL_GROUP_OBJ: t = 0x04; break;
            case ARCHIVE_ENTRY_ACL_GROUP: t = 0x08, id = static_cast<uint32_t>(qual); break;
            case ARCHIVE_ENTRY_ACL_MASK: t = 0x10; break;
            case ARCHIVE_ENTRY_ACL_OTHER: t = 0x20; break;
            default: throw ArchiveError("NFSv4 ACLs cannot be restored on Linux");
        }
        entries.emplace_back(t, id, static_cast<uint16_t>(perm & 7));
    }
    if (entries.empty()) return false;
    std::sort(entries.begin(), entries.end());
    out.clear();
    auto put16 = [&](uint16_t v) { out += char(v & 0xff), out += char(v >> 8); };
    auto put32 = [&](uint32_t v) { put16(uint16_t(v & 0xffff)), put16(uint16_t(v >> 16)); };
    put32(2);  // POSIX_ACL_XATTR_VERSION
    for (auto& [t, id, p] : entries) {
        put16(t);
        put16(p);
        put32(id);
    }
    return true;
}

}  // namespace

std::vector<EntryXattr> entry_xattrs(struct archive_entry* e, bool same_owner) {
    std::vector<EntryXattr> out;
    std::size_t list_bytes = 0;
    if (archive_entry_xattr_reset(e) > 0) {
        const char* name;
        const void* value;
        size_t size;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
            std::string_view n(name ? name : "");
            check_name(n);
            if (is_bookkeeping(n)) continue;
            if (!same_owner && n == "security.capability") continue;
            if (size > kXattrValueMax)
                throw ArchiveError("xattr '" + std::string(n) + "' is larger than 64 KiB");
            list_bytes += n.size() + 1;
            if (list_bytes > kXattrListMax)
                throw ArchiveError("more xattr names than a file can hold (64 KiB)");
            out.push_back({std::string(n), std::string(static_cast<const char*>(value), size)});
        }
    }
    auto has = [&](std::string_view n) {
        return std::any_of(out.begin(), out.end(), [&](const EntryXattr& x) { return x.name == n; });
    };
    std::string acl;
    if (!has("system.posix_acl_access") && acl_as_xattr(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, acl))
        out.push_back({"system.posix_acl_access", acl});
    if (!has("system.posix_acl_default") && acl_as_xattr(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, acl))
        out.push_back({"system.posix_acl_default", acl});
    // The kernel drops security.capability on chown; it is restored after the owner, and
    // restoring it last keeps it clear of any later attribute work as well.
    std::stable_partition(out.begin(), out.end(),
                          [](const EntryXattr& x) { return x.name != "security.capability"; });
    return out;
}

void set_xattrs_fd(int fd, const std::vector<EntryXattr>& xattrs, const std::string& label) {
    for (const EntryXattr& x : xattrs) {
        if (fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0) < 0)
            throw SysError(errno, label + " (xattr " + x.name + ")");
    }
}

void set_xattrs_at(int dirfd, const char* name, const std::vector<EntryXattr>& xattrs,
                   const std::string& label) {
    if (xattrs.empty()) return;
    // /proc/self/fd/N is the directory itself; the last component is not followed (l*).
    std::string path = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
    for (const EntryXattr& x : xattrs) {
        if (lsetxattr(path.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0) < 0)
            throw SysError(errno, label + " (xattr " + x.name + ")");
    }
}

}  // namespace sk
