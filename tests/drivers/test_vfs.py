"""The vfs driver beyond the contract: on a reflink filesystem a child layer costs no data."""

from __future__ import annotations

import fcntl
import os
import struct

from storagekit.drivers.vfs import VfsDriver

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_SHARED = 0x2000
MIB = 1 << 20


def extent_flags(path) -> list[int]:
    """The flags of every extent of a file, from the kernel's FIEMAP."""
    count = 64
    req = struct.pack("=QQLLLL", 0, 2**64 - 1, 1, 0, count, 0) + b"\0" * (56 * count)
    res = bytearray(req)
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, res)  # fills res in place
    mapped = struct.unpack_from("=L", res, 20)[0]
    return [struct.unpack_from("=QQQQQLLLL", res, 32 + 56 * i)[5] for i in range(mapped)]


def used_bytes(path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_child_layers_share_extents_on_xfs(xfs_dir):
    d = VfsDriver(xfs_dir / "vfs")
    d.create_rw("base")  # written through its mount: a writable layer
    base = d.get("base")
    with open(os.path.join(base, "big"), "wb") as f:
        f.write(os.urandom(32 * MIB))
    os.sync()
    d.put("base")
    before = used_bytes(xfs_dir)
    for i in range(5):
        d.create(f"child{i}", "base" if i == 0 else f"child{i - 1}")
    os.sync()
    grown = used_bytes(xfs_dir) - before
    assert grown < 4 * MIB, f"5 child layers of a 32 MiB file took {grown} bytes"
    child = os.path.join(d.get("child4"), "big")
    flags = extent_flags(child)
    assert flags and all(f & FIEMAP_EXTENT_SHARED for f in flags)
    with open(child, "rb") as f, open(os.path.join(d.path("base"), "big"), "rb") as g:
        assert f.read() == g.read()
    d.put("child4")
    assert dict(d.status())["Layer data sharing"] == "reflink (FICLONE)"


def test_no_reflink_option_copies(xfs_dir):
    d = VfsDriver(xfs_dir / "vfs", {"vfs.reflink": "false"})
    d.create("base")
    with open(os.path.join(d.path("base"), "big"), "wb") as f:
        f.write(os.urandom(8 * MIB))
    d.create("child", "base")
    flags = extent_flags(os.path.join(d.path("child"), "big"))
    assert flags and not any(f & FIEMAP_EXTENT_SHARED for f in flags)
    assert dict(d.status())["Layer data sharing"] == "full copy"


def test_full_copies_on_ext4(ext4_dir):
    d = VfsDriver(ext4_dir / "vfs")
    d.create("base")
    with open(os.path.join(d.path("base"), "f"), "wb") as f:
        f.write(b"x" * MIB)
    d.create("child", "base")
    with open(os.path.join(d.path("child"), "f"), "rb") as f:
        assert f.read() == b"x" * MIB
    assert dict(d.status())["Layer data sharing"] == "full copy"
