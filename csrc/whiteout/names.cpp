// Dialect names and the OCI/aufs whiteout naming scheme.
#include <string>

#include "common/syserror.hpp"
#include "whiteout/whiteout.hpp"

namespace sk::whiteout {

Dialect parse_dialect(std::string_view name) {
    if (name == "none") return Dialect::none;
    if (name == "oci") return Dialect::oci;
    if (name == "overlay") return Dialect::overlay;
    if (name == "overlay-user") return Dialect::overlay_user;
    throw ValueErr("unknown whiteout dialect '" + std::string(name) +
                   "' (expected none, oci, overlay or overlay-user)");
}

std::string_view dialect_name(Dialect d) {
    switch (d) {
        case Dialect::none: return "none";
        case Dialect::oci: return "oci";
        case Dialect::overlay: return "overlay";
        case Dialect::overlay_user: return "overlay-user";
    }
    return "?";
}

const char* opaque_xattr(Dialect d) {
    if (d == Dialect::overlay) return kOverlayOpaqueXattr;
    if (d == Dialect::overlay_user) return kOverlayUserOpaqueXattr;
    return nullptr;
}

NameKind classify(std::string_view name) {
    if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
        throw ArchiveError("invalid name '" + std::string(name) + "': contains '/' or NUL");
    if (!name.starts_with(kPrefix)) return NameKind::plain;
    if (name == kOpaque) return NameKind::opaque;
    if (name.starts_with(kMetaPrefix)) return NameKind::meta;
    std::string_view t = name.substr(kPrefix.size());
    if (t.empty() || t == "." || t == "..")
        throw ArchiveError("invalid whiteout '" + std::string(name) + "': it names no entry");
    return NameKind::whiteout;
}

std::optional<std::string_view> target(std::string_view name) {
    if (classify(name) != NameKind::whiteout) return std::nullopt;
    return name.substr(kPrefix.size());
}

}  // namespace sk::whiteout
