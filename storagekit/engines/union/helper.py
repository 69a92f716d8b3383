"""The union engine's mount(8) helper: mounts of type ``fuse.storagekit-union``.

mount(8) hands a mount of type ``fuse.NAME`` to mount.fuse3, which runs the program NAME
(through /bin/sh, from a fixed PATH: scripts/bootstrap.sh links the helper into
/usr/local/bin) as ``NAME SOURCE MOUNTPOINT -o OPTIONS``. The helper starts an engine daemon
on MOUNTPOINT with the branches of the ``br=`` option and returns once the mount serves. This
is how mounts as data (a containerd snapshotter's answer) become real union mounts.

The helper's first name was ``storagekit-unionfs``; it is installed under both names, and
mounts of either type work (an fstab may name ``fuse.storagekit-unionfs``).
"""

from __future__ import annotations

import errno
import os
import sys

#: The helper program's name, and the mount type that makes mount(8) run it.
HELPER = "storagekit-union"
MOUNT_TYPE = f"fuse.{HELPER}"
#: The name it had before: still installed, still a mount type that works.
OLD_HELPER = "storagekit-unionfs"


def mount_options(branches: list[str], readonly: bool = False) -> list[str]:
    """Mount options that describe a union, for `mount -t fuse.storagekit-union` (mounts as
    data): "br=<top>=rw:<lower>=ro+wh:..." as aufs spells its branches."""
    from . import UnionError

    for b in branches:
        if any(c in b for c in ",:="):
            raise UnionError(errno.EINVAL, f"branch path {b!r} contains ',' ':' or '='")
    top = "ro" if readonly else "rw"
    br = ":".join([f"{branches[0]}={top}"] + [f"{b}=ro+wh" for b in branches[1:]])
    return [f"br={br}"] + (["ro"] if readonly else [])


def mount_helper(argv: list[str] | None = None) -> int:
    """`storagekit-union SOURCE MOUNTPOINT -o OPTIONS`, as mount.fuse3 calls it: start the
    engine on MOUNTPOINT with the branches of the br= option and return once it serves."""
    from . import start

    prog = os.path.basename(sys.argv[0]) if argv is None and sys.argv else HELPER
    args = list(sys.argv[1:] if argv is None else argv)
    options: list[str] = []
    while "-o" in args:
        i = args.index("-o")
        options += args[i + 1].split(",") if i + 1 < len(args) else []
        del args[i:i + 2]
    if len(args) != 2:
        print(f"usage: {prog} SOURCE MOUNTPOINT -o br=DIR=rw:DIR=ro+wh...", file=sys.stderr)
        return 2
    branches, readonly = [], "ro" in options
    for opt in options:
        if opt.startswith("br="):
            branches = [b.rsplit("=", 1)[0] for b in opt[3:].split(":") if b]
    if not branches:
        print(f"{prog}: no br= option", file=sys.stderr)
        return 2
    try:
        start(args[1], branches, readonly=readonly)
    except OSError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0
