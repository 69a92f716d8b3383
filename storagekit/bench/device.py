"""--device: format a whole device for a run, and mount it for the run's length.

A device is wiped only with --destroy-data, and one that is mounted or holds a partition
table (or a filesystem's signature on a partition of it) only with --destroy-data given
twice: the second time says "yes, that one too". The device is unmounted afterwards,
whatever happens to the run; what was formatted is recorded in the report's setup.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _native
from ..errors import InvalidArgument
from ..hostinfo import mounts_of_device

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}


def partitions(dev: str) -> list[str]:
    """The device's partitions (/dev/sda1 ...), from sysfs."""
    name = os.path.basename(os.path.realpath(dev))
    sys_dir = Path("/sys/class/block") / name
    return sorted(f"/dev/{p.name}" for p in sys_dir.glob(f"{name}*") if (p / "partition").exists())


def partition_table(dev: str) -> str | None:
    """The partition table type blkid finds on dev ("gpt", "dos"), or None."""
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", dev],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def refusal(dev: str, destroy: int) -> str | None:
    """Why dev must not be formatted with --destroy-data given `destroy` times, or None."""
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        return f"{dev}: no such device"
    if not stat.S_ISBLK(st.st_mode):
        return f"{dev} is not a block device"
    if destroy < 1:
        return f"--device {dev} wipes everything on it: add --destroy-data"
    mounted = [m for d in [dev, *partitions(dev)] for m in mounts_of_device(d)]
    table = partition_table(dev)
    if destroy < 2:
        if mounted:
            return (f"{dev} is mounted on {', '.join(mounted)}: give --destroy-data twice "
                    "to unmount and wipe it anyway")
        if table or partitions(dev):
            return (f"{dev} holds a partition table ({table or 'partitions'}): give "
                    "--destroy-data twice to wipe it anyway")
    return None


@contextlib.contextmanager
def formatted(dev: str, fstype: str, destroy: int) -> Iterator[tuple[Path, dict[str, Any]]]:
    """dev formatted with fstype and mounted on a temporary directory: (mount point, facts)."""
    why = refusal(dev, destroy)
    if why:
        raise InvalidArgument(why)
    for d in [*partitions(dev), dev]:
        for target in mounts_of_device(d):
            _native.umount(target)
    subprocess.run(["wipefs", "-a", "-q", dev], check=True, capture_output=True)
    cmd = [*MKFS[fstype], dev]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InvalidArgument(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    mnt = Path(tempfile.mkdtemp(prefix="storagekit-bench-"))
    try:
        subprocess.run(["mount", "-t", fstype, dev, str(mnt)], check=True, capture_output=True)
        try:
            yield mnt, {"device": dev, "mkfs": fstype, "mkfs_command": " ".join(cmd)}
        finally:
            _native.umount(str(mnt))
    finally:
        mnt.rmdir()
