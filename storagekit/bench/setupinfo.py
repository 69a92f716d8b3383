"""What a run was measured on, so that two runs on two disks can always be told apart."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from pathlib import Path
from typing import Any

from .. import __version__
from ..hostinfo import block_device

FICLONE = 0x40049409  # _IOW(0x94, 9, int): linux/fs.h


def reflink_supported(directory: Path) -> bool:
    """Can files under directory share their blocks (FICLONE)? Tried, not guessed."""
    src, dst = directory / ".reflink-probe-src", directory / ".reflink-probe-dst"
    try:
        src.write_bytes(b"x" * 4096)
        with open(src, "rb") as s, open(dst, "wb") as d:
            try:
                fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
            except OSError:
                return False
        return True
    finally:
        for p in (src, dst):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _sysfs(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def disk(directory: Path) -> dict[str, Any]:
    """The block device under directory (partition -> its disk; a loop device -> also the
    disk under its backing file), with serial and queue depth beside storagekit info's."""
    info = block_device(directory)
    name = os.path.basename(info.get("disk") or "")
    if name:
        info["serial"] = _udev_serial(name)
        # blk-mq's queue depth; SCSI disks also report the device's own (device/queue_depth)
        info["queue_depth"] = _int(_sysfs(f"/sys/block/{name}/device/queue_depth")
                                   or _sysfs(f"/sys/block/{name}/queue/nr_requests"))
        info["nr_requests"] = _int(_sysfs(f"/sys/block/{name}/queue/nr_requests"))
        if info.get("loop_backing_file"):
            backing = Path(info["loop_backing_file"])
            if backing.exists():
                info["loop_backing_disk"] = disk(backing.parent)
    return info


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _udev_serial(name: str) -> str | None:
    import pyudev

    try:
        dev = pyudev.Devices.from_name(pyudev.Context(), "block", name)
    except (pyudev.DeviceNotFoundError, ValueError):
        return None
    serial = (dev.properties.get("ID_SERIAL_SHORT") or dev.properties.get("ID_SERIAL")
              or _sysfs(f"/sys/block/{name}/serial") or _sysfs(f"/sys/block/{name}/device/serial"))
    return serial or None


def _cpu() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"model": model, "count": os.cpu_count()}


def _memory_bytes() -> int | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def record(directory: Path, driver_options: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The setup section of report.json."""
    from .. import _native

    mount = _native.find_mount(str(directory))
    return {
        "dir": str(directory),
        "disk": disk(directory),
        "filesystem": {
            "type": mount["fstype"],
            "source": mount["source"],
            "mount_point": mount["target"],
            "mount_options": mount["options"],
            "reflink": reflink_supported(directory),
        },
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu": _cpu(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "storagekit_version": __version__,
        "driver_options": driver_options,
    }
