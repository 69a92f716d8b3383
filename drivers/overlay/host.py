"""What the overlay driver needs to know about the host: whether the kernel has overlayfs and
the backing filesystem can carry layers, the overlay module's parameters (which decide the
mount options), and whether we run in a user namespace (userxattr)."""

from __future__ import annotations

import os

from storagekit import _native
from storagekit.fsutil import existing_ancestor
from storagekit.hostinfo import backing_fs, filesystems


def module_param(name: str) -> str | None:
    """/sys/module/overlay/parameters/<name>, or None where the kernel has no such parameter."""
    try:
        with open(f"/sys/module/overlay/parameters/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def is_opaque(path: str, userxattr: bool) -> bool:
    """Does directory path (a symlink is followed) carry overlay's opaque xattr (the user.*
    one with userxattr)?"""
    name = "user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
    try:
        return os.getxattr(path, name) == b"y"
    except OSError:
        return False


def in_user_namespace() -> bool:
    """Does this process run in a user namespace (so overlay needs userxattr)?"""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def probe(root: str | os.PathLike[str]) -> tuple[bool, str]:
    """Can overlay layers live under root? (ok, reason)"""
    if "overlay" not in filesystems():
        return False, "the kernel has no overlay filesystem (modprobe overlay)"
    root = os.path.abspath(root)
    base = existing_ancestor(root)
    fstype = backing_fs(base)
    if fstype in ("overlay", "aufs"):
        return False, f"{root} is on {fstype}, which overlay cannot use as a layer"
    if not _native.supports_d_type(base):
        hint = " (xfs: mkfs.xfs -n ftype=1)" if fstype == "xfs" else ""
        return False, (f"the backing filesystem {fstype} of {root} does not report file "
                       f"types (d_type){hint}")
    return True, f"kernel overlayfs on {fstype}"
