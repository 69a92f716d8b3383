"""Branches on real filesystems and aufs branch attributes: copy-up shares data by reflink
where the filesystem can (FIEMAP), branches on different filesystems, "ro" versus "ro+wh"."""

from __future__ import annotations

import array
import fcntl
import os
import struct
from pathlib import Path

import pytest

from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_SHARED = 0x2000


def extents(path: Path, count: int = 32) -> list[tuple[int, int, int]]:
    """(physical, length, flags) of the file's extents."""
    header = struct.pack("=QQIIII", 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, count, 0)
    buf = array.array("B", header + bytes(56 * count))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf, True)
    mapped = struct.unpack_from("=I", buf, 20)[0]
    out = []
    for i in range(mapped):
        _, physical, length, _, _, flags = struct.unpack_from("=QQQQQI", buf, 32 + 56 * i)
        out.append((physical, length, flags))
    return out


@pytest.fixture
def layers_on(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("layers_on", ["xfs_dir", "btrfs_dir"], indirect=True)
def test_copy_up_reflinks(layers_on: Path) -> None:
    rw, lower, mnt = layers_on / "rw", layers_on / "lower", layers_on / "mnt"
    for d in (rw, lower, mnt):
        d.mkdir()
    data = os.urandom(1 << 20) * 8
    (lower / "big").write_bytes(data)
    os.sync()
    union.start(mnt, [rw, lower])
    try:
        with open(mnt / "big", "r+b") as f:  # open for writing: copied up, nothing written
            pass
        assert (rw / "big").read_bytes() == data
        up, low = extents(rw / "big"), extents(lower / "big")
        assert up and all(flags & FIEMAP_EXTENT_SHARED for *_, flags in up)
        assert {p for p, *_ in up} == {p for p, *_ in low}
        with open(mnt / "big", "r+b") as f:
            f.write(b"changed")
        assert (lower / "big").read_bytes() == data
        assert (mnt / "big").read_bytes() == b"changed" + data[7:]
    finally:
        union.stop(mnt)


def test_branches_on_different_filesystems(xfs_dir: Path, tmp_path: Path) -> None:
    lower, mnt = tmp_path / "lower", tmp_path / "mnt"
    rw = xfs_dir / "rw"
    for d in (rw, lower, mnt):
        d.mkdir()
    (lower / "d").mkdir()
    (lower / "d/f").write_bytes(b"on ext4")
    os.setxattr(lower / "d/f", "user.k", b"v")
    union.start(mnt, [rw, lower])
    try:
        with open(mnt / "d/f", "ab") as f:
            f.write(b", now on xfs")
        assert (rw / "d/f").read_bytes() == b"on ext4, now on xfs"
        assert os.getxattr(mnt / "d/f", "user.k") == b"v"
        os.rename(mnt / "d", mnt / "e")
        assert sorted(os.listdir(mnt)) == ["e"]
        assert (mnt / "e/f").read_bytes() == b"on ext4, now on xfs"
    finally:
        union.stop(mnt)


def test_ro_branch_whiteouts_do_not_count(tmp_path: Path) -> None:
    top, bottom, mnt = tmp_path / "top", tmp_path / "bottom", tmp_path / "mnt"
    for d in (top, bottom, mnt):
        d.mkdir()
    (bottom / "a").write_bytes(b"a")
    (bottom / "b").write_bytes(b"b")
    (top / ".wh.a").write_bytes(b"")
    (top / ".wh.b").write_bytes(b"")
    # aufs: "ro" looks up no whiteouts, "ro+wh" does; neither shows a .wh. name
    union.start(mnt, [f"{top}=ro", f"{bottom}=ro"], readonly=True)
    try:
        assert sorted(os.listdir(mnt)) == ["a", "b"]
    finally:
        union.stop(mnt)
    union.start(mnt, [f"{top}=ro+wh", bottom], readonly=True)
    try:
        assert os.listdir(mnt) == []
    finally:
        union.stop(mnt)
