// Extended attributes carried by a tar entry (SCHILY.xattr.*, LIBARCHIVE.xattr.*, and
// POSIX ACLs from SCHILY.acl.*), checked and restored onto the applied file.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <cstddef>
#include <string>
#include <vector>

namespace sk {

struct EntryXattr {
    std::string name;
    std::string value;
};

// The xattrs of entry `e` to restore, in order. Leaves out overlay bookkeeping
// (trusted.overlay.*, user.overlay.*: never layer content) and, when !same_owner,
// security.capability. Throws ArchiveError (without the entry name) for an invalid name, a
// value over 64 KiB, or more names than a file can hold.
std::vector<EntryXattr> entry_xattrs(struct archive_entry* e, bool same_owner);

// Restores them on an open file, or on entry `name` of directory dirfd without following
// it. `label` is the entry's path for error messages.
void set_xattrs_fd(int fd, const std::vector<EntryXattr>& xattrs, const std::string& label);
void set_xattrs_at(int dirfd, const char* name, const std::vector<EntryXattr>& xattrs,
                   const std::string& label);

}  // namespace sk
