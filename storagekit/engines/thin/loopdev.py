"""Loop devices over the daemon's device files: attach (LOOP_CTL_GET_FREE + LOOP_CONFIGURE),
detach (LOOP_CLR_FD), and what the kernel says about them (sysfs, the mount table)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from ...hostinfo import mounts_of_device as mounts_of

LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64

# struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 __reserved[8]; }
# struct loop_info64 { u64 device, inode, rdevice, offset, sizelimit; u32 number, encrypt_type,
#                      encrypt_key_size, flags; u8 file_name[64], crypt_name[64], key[32];
#                      u64 init[2]; }
_LOOP_CONFIG = struct.Struct("=II 5Q 4I 64s 64s 32s 2Q 8Q")
assert _LOOP_CONFIG.size == 304


def attach(path: str | os.PathLike[str], direct_io: bool = True, read_only: bool = False) -> str:
    """Attach a free loop device to path; returns "/dev/loopN". With direct_io the loop
    device does no buffering of its own over the file."""
    backing = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            name = os.fsencode(path)[: LO_NAME_SIZE - 1]
            flags = (LO_FLAGS_DIRECT_IO if direct_io else 0) | (
                LO_FLAGS_READ_ONLY if read_only else 0)
            config = _LOOP_CONFIG.pack(backing, 0, 0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"",
                                       b"", 0, 0, *([0] * 8))
            for _ in range(100):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{number}"
                fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                    return dev
                except OSError as e:
                    if e.errno != errno.EBUSY:  # EBUSY: taken by someone else meanwhile
                        raise OSError(e.errno, e.strerror, dev) from None
                finally:
                    os.close(fd)
            raise OSError(errno.EBUSY, "no free loop device could be taken", "/dev/loop-control")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)


def detach(dev: str) -> None:
    """LOOP_CLR_FD. A device still open elsewhere is detached by the kernel when its last
    user closes it (autoclear)."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as e:
        if e.errno != errno.ENXIO:  # ENXIO: not attached any more
            raise OSError(e.errno, e.strerror, dev) from None
    finally:
        os.close(fd)


def backing_file(dev: str) -> str | None:
    """The file behind /dev/loopN as the kernel names it, or None when it is not attached."""
    sysfs = Path(f"/sys/block/{os.path.basename(dev)}/loop/backing_file")
    try:
        return sysfs.read_text().rstrip("\n")
    except OSError:
        return None


def direct_io(dev: str) -> bool:
    try:
        return Path(f"/sys/block/{os.path.basename(dev)}/loop/dio").read_text().strip() == "1"
    except OSError:
        return False


LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64_SIZE = 232  # struct loop_info64


def backing_is_dead(dev: str) -> bool:
    """Is the file behind /dev/loopN on a FUSE connection that is gone (its daemon killed)?
    The kernel then cannot stat it (LOOP_GET_STATUS64 fails with ENOTCONN) — unless it
    still trusts cached attributes — nor read it: a direct read of the first block fails."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64_SIZE))
        except OSError as e:
            return e.errno == errno.ENOTCONN
        return not _reads(dev)
    finally:
        os.close(fd)


def _reads(dev: str) -> bool:
    """Does a direct (uncached) read of the device's first 4 KiB succeed?"""
    import mmap

    try:
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return True  # cannot tell: take it for alive
    try:
        buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
        try:
            os.preadv(fd, [buf], 0)
            return True
        except OSError:
            return False
        finally:
            buf.close()
    finally:
        os.close(fd)


def dead_thin_loops() -> dict[str, str]:
    """{"/dev/loopN": backing file} of loop devices over a thin engine's device file whose
    daemon is gone and whose mount was detached: the file is on a dead FUSE connection and
    its name is all the kernel keeps of it, "/<device id>". Nobody can use them any more,
    whichever pool they were. (Those of a pool whose mount is still there are its own
    clean-up's: loops_backed_by.)"""
    out = {}
    for entry in Path("/sys/block").glob("loop*"):
        backing = backing_file(entry.name)
        if backing is None:
            continue
        head, _, tail = backing.rpartition("/")
        if head == "" and tail.isdigit():
            dev = f"/dev/{entry.name}"
            if backing_is_dead(dev):
                out[dev] = backing
    return out


def loops_backed_by(prefix: str) -> dict[str, str]:
    """{"/dev/loopN": backing file} for every loop device whose file is under prefix/."""
    out = {}
    for entry in Path("/sys/block").glob("loop*"):
        backing = backing_file(entry.name)
        if backing is not None and backing.startswith(prefix.rstrip("/") + "/"):
            out[f"/dev/{entry.name}"] = backing
    return out


def in_use(dev: str) -> str | None:
    """Why the block device cannot be detached now (mounted, held by another device or open
    exclusively), or None."""
    mounts = mounts_of(dev)
    if mounts:
        return f"{dev} is mounted on {', '.join(mounts)}"
    holders = Path(f"/sys/block/{os.path.basename(dev)}/holders")
    if holders.is_dir() and any(holders.iterdir()):
        return f"{dev} is held by {', '.join(sorted(p.name for p in holders.iterdir()))}"
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return f"{dev} is in use"
        return None
    os.close(fd)
    return None
