"""What the host puts under a store: the backing filesystem and the block device beneath it.

People benchmarking drivers need to know what disk a figure came from, so ``storagekit info``
reports the device node, model, size, whether it is rotational and its I/O scheduler (read
from udev and sysfs through pyudev).
"""

from __future__ import annotations

import os

from . import _native
from .fsutil import existing_ancestor

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any


def filesystems() -> set[str]:
    """The filesystem types this kernel offers now (/proc/filesystems)."""
    try:
        with open("/proc/filesystems") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def backing_fs(path: str | os.PathLike[str]) -> str:
    """The filesystem type (as in /proc/mounts) that holds path, or would hold it once made."""
    return _native.find_mount(existing_ancestor(path))["fstype"]


def mounts_of_device(dev: str) -> list[str]:
    """Where the block device dev is mounted, in this process's mount namespace."""
    try:
        rdev = os.stat(dev).st_rdev
    except FileNotFoundError:
        return []
    major, minor = os.major(rdev), os.minor(rdev)
    return [m["target"] for m in _native.mount_table()
            if m["major"] == major and m["minor"] == minor]


def _scheduler(text: str) -> str:
    # sysfs lists every scheduler with the active one in brackets: "[mq-deadline] none"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip() or "unknown"


def block_device(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Facts about the block device under path, or {"device": None, "reason": ...}."""
    mount = _native.find_mount(existing_ancestor(path))
    info: dict[str, Any] = {
        "filesystem": mount["fstype"],
        "mount_point": mount["target"],
        "source": mount["source"],
        "device_number": f"{mount['major']}:{mount['minor']}",
    }
    try:
        import pyudev
    except ImportError:  # pragma: no cover - pyudev is a dependency
        info.update(device=None, reason="pyudev is not installed")
        return info
    context = pyudev.Context()
    try:
        dev = pyudev.Devices.from_device_number(
            context, "block", os.makedev(mount["major"], mount["minor"])
        )
    except (pyudev.DeviceNotFoundError, ValueError):
        info.update(device=None, reason="no block device (virtual or network filesystem)")
        return info
    disk = dev if dev.device_type == "disk" else dev.find_parent("block", "disk") or dev

    def attr(d: Any, name: str) -> str | None:
        try:
            value = d.attributes.get(name)
        except (KeyError, OSError):
            return None
        return value.decode(errors="replace").strip() if value is not None else None

    sectors = attr(dev, "size")
    info.update(
        device=dev.device_node,
        disk=disk.device_node,
        model=(disk.properties.get("ID_MODEL") or attr(disk, "device/model")
               or attr(disk, "device/type") or "unknown"),
        size_bytes=int(sectors) * 512 if sectors and sectors.isdigit() else None,
        rotational=attr(disk, "queue/rotational") == "1",
        scheduler=_scheduler(attr(disk, "queue/scheduler") or ""),
    )
    backing = attr(disk, "loop/backing_file")
    if backing:
        info["loop_backing_file"] = backing
    return info
