// Whiteouts: how a layer records that a path of a lower layer is deleted, in each dialect
// storagekit stores, and conversion between dialects. Plain C++ (no Python) so the archive
// code, the userspace aufs engine and the overlay driver share one definition.
//
//   oci / aufs     empty file ".wh.<name>"; opaque directory: file ".wh..wh..opq";
//                  other ".wh..wh.*" names are aufs bookkeeping, never layer content
//   overlay        char device 0/0 named <name>; opaque: xattr trusted.overlay.opaque="y"
//   overlay-user   as overlay, but the opaque xattr is user.overlay.opaque="y"
//   none           no markers are stored: a whiteout is carried out (the entry is deleted)
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sk::whiteout {

inline constexpr std::string_view kPrefix = ".wh.";
inline constexpr std::string_view kMetaPrefix = ".wh..wh.";
inline constexpr std::string_view kOpaque = ".wh..wh..opq";

inline constexpr const char* kOverlayOpaqueXattr = "trusted.overlay.opaque";
inline constexpr const char* kOverlayUserOpaqueXattr = "user.overlay.opaque";

enum class Dialect { none, oci, overlay, overlay_user };

// "none", "oci", "overlay", "overlay-user"; anything else throws ValueErr.
Dialect parse_dialect(std::string_view name);
std::string_view dialect_name(Dialect d);

// The opaque xattr of an overlay dialect, nullptr for the others.
const char* opaque_xattr(Dialect d);

// What one path component means in the OCI/aufs naming scheme.
enum class NameKind { plain, whiteout, opaque, meta };

// Throws ArchiveError for names no layer may carry: ".wh." alone, ".wh.." and ".wh..."
// (whiteouts of "." and ".."), and names containing '/' or NUL.
NameKind classify(std::string_view name);

// ".wh.foo" -> "foo"; nullopt for plain names, the opaque marker and bookkeeping.
// Throws as classify does.
std::optional<std::string_view> target(std::string_view name);

// Is this entry (already lstat'ed) a whiteout in dialect d? Never throws: malformed OCI
// names are not whiteouts.
bool is_whiteout_stat(std::string_view name, const struct stat& st, Dialect d);

// The *_at functions act on entries of the open directory dirfd without following a symlink
// in the final component; `label` is the directory's path, used in error messages only.
bool is_whiteout_at(int dirfd, const std::string& name, Dialect d, const std::string& label);
bool is_opaque_fd(int dirfd, Dialect d, const std::string& label);

// Records that `name` is deleted. oci: creates (or replaces) the file ".wh.<name>";
// overlay*: replaces an existing entry <name> by a char device 0/0; none: deletes <name>
// (recursively) if it exists.
void make_whiteout_at(int dirfd, const std::string& name, Dialect d, const std::string& label);

// Marks the directory opaque. none: deletes every entry of the directory.
void set_opaque_fd(int dirfd, Dialect d, const std::string& label);
void clear_opaque_fd(int dirfd, Dialect d, const std::string& label);

// Rewrites every whiteout and opaque marker of the tree below rootfd (the root included)
// from dialect `from` to dialect `to` (both oci or overlay*). Does not descend into other
// mounts nor into aufs bookkeeping directories. Returns the number of markers rewritten.
std::size_t convert_tree(int rootfd, Dialect from, Dialect to, const std::string& label);

}  // namespace sk::whiteout
