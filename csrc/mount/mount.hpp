// Mounting and the mount table, for the Python bindings and for other native areas (the
// namespace runtime, the FUSE engines) that mount and unmount without going through Python.
//
// Every function throws sk::SysError (errno, path[, path2]) on failure and may block in the
// kernel: callers holding the GIL release it first.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace sk {

// One line of /proc/self/mountinfo, decoded (octal escapes in paths are undone).
struct MountEntry {
    int id = 0;
    int parent_id = 0;
    unsigned major = 0;
    unsigned minor = 0;
    std::string root;         // path of the mount's root inside its filesystem
    std::string target;       // mount point, as seen from the calling process's root
    std::string fstype;
    std::string source;
    std::string options;      // vfs and fs options merged, as /proc/mounts shows them
    std::string vfs_options;  // per-mount options (rw, nosuid, relatime, ...)
    std::string fs_options;   // superblock options (rw, size=..., lowerdir=..., ...)
};

// Entries keep /proc/self/mountinfo order, which is not always creation order: stacking and
// visibility are decided through parent ids, never by position alone.
using MountTable = std::vector<MountEntry>;

// The calling process's mount table, parsed by libmount.
MountTable read_mount_table();

// ------------------------------------------------------------------------------- path queries

// realpath(path). With `lenient`, a path that cannot be resolved (missing, or a dead FUSE
// mount answering ENOTCONN) is resolved up to its parent and its last component taken as
// is, so that cleanup code can still name it; without, the error is thrown.
std::string resolve_mount_path(const std::string& path, bool lenient);

// On an already read table and a resolved path (see resolve_mount_path):
// the index of the mount visible at `resolved` (the one whose filesystem path lookups end in),
// or -1 when no mount covers it.
int visible_mount_index(const MountTable& table, const std::string& resolved);
// Mounts whose target is `resolved` or below it, in the order to unmount them: deepest target
// first; on the same target the upper (stacked later) mount first.
std::vector<MountEntry> mounts_under(const MountTable& table, const std::string& resolved);

// The same on the current table, resolving `path` first.
MountEntry find_mount(const std::string& path);            // throws for a path that does not resolve
std::vector<MountEntry> mounts_under(const std::string& path);  // lenient: a missing path has none
bool is_mountpoint(const std::string& path);                // lenient: a missing path is not one

// ----------------------------------------------------------------------------------- actions

// mount(2). A null fstype or data is passed as NULL. Errors name target, and source when it
// is a path.
void mount_fs(const std::string& source, const std::string& target, const char* fstype,
              unsigned long flags, const char* data);
// umount2(2).
void umount_fs(const std::string& target, int flags = 0);
// Bind source onto target (with its submounts when recursive). A read-only bind appears
// read-only at once (it is made read-only before it is attached) and keeps the other flags
// it inherits (nosuid, nodev, noexec, atime); with recursive, every submount is read-only too.
void bind_mount(const std::string& source, const std::string& target, bool readonly,
                bool recursive);
// Unmount everything at or under path, deepest first, re-reading the table until nothing is
// left (stacked and covered mounts need several rounds). Returns how many unmounts were
// done. A mount that disappeared meanwhile is not an error; one that stays (busy, ...) throws
// its errno with its target.
int umount_tree(const std::string& path, bool detach = false);

// ---------------------------------------------------------------------------------- overlay

struct OverlaySpec {
    std::vector<std::string> lowerdirs;   // uppermost first, as in lowerdir=a:b:c
    std::optional<std::string> upperdir;
    std::optional<std::string> workdir;
    std::vector<std::string> options;     // "key=value" or "flag": index=off, userxattr, volatile
    bool readonly = false;                // the mount (not the superblock) is read-only
};

// Mount an overlay on target through the new mount API (fsopen, fsconfig "lowerdir+" per
// layer, fsmount, move_mount), which has no one-page limit on the option string: up to the
// kernel's 500 layers. Layer paths longer than the 255 bytes fsconfig takes for a string are
// passed as an open directory (FSCONFIG_SET_FD, kernel 6.13). On failure the kernel's own
// explanation is appended to the target in SysError::path: "<target>: overlay: <message>" from
// the fs context, and/or "<target>: overlayfs: <message>" from the kernel log (where overlayfs
// prints most of its reasons). path2 is the layer or option being set, when there is one.
// Without an upperdir the kernel wants at least two lowerdirs.
void mount_overlay(const std::string& target, const OverlaySpec& spec);

// Can overlays be mounted through fsconfig "lowerdir+" here (kernel 6.8 and later)?
bool has_overlay_fsconfig_append();

// mount(2) with relative paths in `source` and `data` resolved against `dir` (which the
// calling process does not chdir into: a short-lived child does the mount).
void mount_fs_in_dir(const std::string& dir, const std::string& source, const std::string& target,
                     const char* fstype, unsigned long flags, const char* data);

// ----------------------------------------------------------------------------- filesystems

// Does the filesystem of `dir` report file types in directory entries (d_type)? Creates and
// removes a probe file in dir.
bool supports_d_type(const std::string& dir);

}  // namespace sk
