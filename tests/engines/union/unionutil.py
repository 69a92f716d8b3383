"""Helpers for the union engine tests: layers built from tars, union mounts served by the
engine's daemon, and kernel overlay mounts of the same layers as the reference.

Layers come from the same tar through the archive area twice: in the OCI/aufs format
(``dialect="oci"``) as branches of the union, in the overlay format (``dialect="overlay"``) as
overlay lowers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from treeutil import make_tar

from storagekit import _native as n
from storagekit.engines import union

# security.capability of a file with cap_net_raw+ep (vfs_cap_data revision 2)
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)

BOTTOM = [
    {"name": "etc", "type": "dir"},
    {"name": "etc/passwd", "data": b"root:x:0:0\n"},
    {"name": "etc/hosts", "data": b"127.0.0.1 localhost\n", "xattrs": {"user.note": "hello"}},
    {"name": "etc/conf.d", "type": "dir"},
    {"name": "etc/conf.d/a", "data": b"a\n"},
    {"name": "etc/conf.d/b", "data": b"b\n"},
    {"name": "bin", "type": "dir"},
    {"name": "bin/tool", "data": b"#!/bin/sh\necho tool\n", "mode": 0o755},
    {"name": "bin/tool-link", "type": "hardlink", "link": "bin/tool"},
    {"name": "bin/ping", "data": b"ping", "mode": 0o755},
    {"name": "usr", "type": "dir"},
    {"name": "usr/share", "type": "dir"},
    {"name": "usr/share/doc", "type": "dir"},
    {"name": "usr/share/doc/readme", "data": b"read me\n"},
    {"name": "var", "type": "dir"},
    {"name": "var/lib", "type": "dir"},
    {"name": "var/lib/data.bin", "data": bytes(range(256)) * 64},
    {"name": "opq", "type": "dir"},
    {"name": "opq/old1", "data": b"old1"},
    {"name": "opq/old2", "data": b"old2"},
    {"name": "del", "type": "dir"},
    {"name": "del/gone.txt", "data": b"gone"},
    {"name": "del/keep.txt", "data": b"keep"},
    {"name": "tree", "type": "dir"},
    {"name": "tree/sub", "type": "dir"},
    {"name": "tree/sub/leaf", "data": b"leaf"},
    {"name": "tree/top", "data": b"top"},
    {"name": "link", "type": "symlink", "link": "etc/hosts"},
    {"name": "dev", "type": "dir"},
    {"name": "dev/null", "type": "char", "devmajor": 1, "devminor": 3, "mode": 0o666},
    {"name": "dev/loop9", "type": "block", "devmajor": 7, "devminor": 9, "mode": 0o660},
    {"name": "dev/pipe", "type": "fifo", "mode": 0o644},
    {"name": "private", "type": "dir", "mode": 0o700},
    {"name": "private/secret", "data": b"secret", "mode": 0o600},
    {"name": "shared", "type": "dir", "mode": 0o777},
    {"name": "shared/owned", "data": b"nobody's", "uid": 65534, "gid": 65534, "mode": 0o644},
    {"name": "shared/roots", "data": b"root's", "mode": 0o644},
    {"name": "sticky", "type": "dir", "mode": 0o1777},
    {"name": "sticky/roots", "data": b"root's", "mode": 0o666},
    {"name": "empty", "type": "dir"},
]

TOP = [
    {"name": "etc", "type": "dir"},
    {"name": "etc/passwd", "data": b"root:x:0:0\nnobody:x:65534:65534\n"},
    {"name": "etc/conf.d", "type": "dir"},
    {"name": "etc/conf.d/.wh.b"},
    {"name": "opq", "type": "dir"},
    {"name": "opq/.wh..wh..opq"},
    {"name": "opq/new1", "data": b"new1"},
    {"name": "del", "type": "dir"},
    {"name": "del/.wh.gone.txt"},
    {"name": "usr", "type": "dir"},
    {"name": "usr/share", "type": "dir"},
    {"name": "usr/share/.wh.doc"},
    {"name": "toponly", "type": "dir"},
    {"name": "toponly/file", "data": b"top only"},
    {"name": "tree", "type": "dir"},
    {"name": "tree/sub", "type": "dir"},
    {"name": "tree/sub/leaf2", "data": b"leaf2"},
]


def daemons_under(base: Path) -> set[int]:
    """Engine daemons serving a mount point below `base` (other suites may run engines of
    their own on this machine at the same time)."""
    root = str(base).rstrip("/") + "/"
    out = set()
    for pid in union.all_daemons():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        rest = args[args.index(b"--") + 1 :] if b"--" in args else []
        if rest and os.fsdecode(rest[0]).startswith(root):
            out.add(pid)
    return out


def apply_layer(data: bytes, root: Path, dialect: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # feed the pipe from a child, as a stream would be
            os.close(r)
            try:
                os.write(w, data)
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        n.apply_tar(r, str(root), dialect=dialect)
        os.waitpid(pid, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return root


class Stacks:
    """The same lower layers as union branches and as overlay lowers, and mounts of both."""

    def __init__(self, base: Path, layers: list[list[dict]], *, passthrough: bool = True):
        self.base = base
        self.passthrough = passthrough
        self.tars = [make_tar(spec) for spec in layers]  # bottom first
        self.mounts: list[Path] = []
        self.unions: list[Path] = []
        self._count = 0

    def _dir(self, prefix: str) -> Path:
        self._count += 1
        d = self.base / f"{prefix}{self._count}"
        d.mkdir()
        return d

    def lowers(self, dialect: str) -> list[Path]:
        """Fresh lower layers in `dialect`, top first."""
        d = self._dir(f"lowers-{dialect}-")
        out = [apply_layer(t, d / f"l{i}", dialect) for i, t in enumerate(self.tars)]
        for lower in out:
            if (lower / "bin/ping").exists():
                os.setxattr(lower / "bin/ping", "security.capability", CAP_NET_RAW)
        return out[::-1]

    def union(self, *, readonly: bool = False, log: Path | None = None) -> Path:
        d = self._dir("union-")
        rw = d / "rw"
        mnt = d / "mnt"
        rw.mkdir()
        mnt.mkdir()
        branches = [] if readonly else [rw]
        branches += self.lowers("oci")
        union.start(mnt, branches, readonly=readonly, log=log, passthrough=self.passthrough)
        self.unions.append(mnt)
        self.rw = rw
        return mnt

    def overlay(self, options: list[str] | None = None) -> Path:
        d = self._dir("overlay-")
        upper, work, mnt = d / "upper", d / "work", d / "mnt"
        for p in (upper, work, mnt):
            p.mkdir()
        n.fsmount_overlay(
            str(mnt),
            [str(p) for p in self.lowers("overlay")],
            str(upper),
            str(work),
            options if options is not None else ["redirect_dir=on", "index=on"],
        )
        self.mounts.append(mnt)
        self.upper = upper
        return mnt

    def close(self) -> None:
        for mnt in self.unions:
            union.stop(mnt)
        for mnt in self.mounts:
            n.umount_tree(str(mnt), detach=True)
