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
