"""Real filesystems on loop devices for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


def _filesystems() -> set[str]:
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


@contextlib.contextmanager
def loop_filesystem(fstype: str, size_mib: int = 512) -> Iterator[Path]:
    """A fresh filesystem of `fstype` on a loop device over a sparse file, mounted on a
    temporary directory; everything is torn down afterwards, even when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("loop filesystems need root")
    if fstype not in _filesystems():
        pytest.skip(f"kernel has no {fstype}")
    if shutil.which(MKFS[fstype][0]) is None:
        pytest.skip(f"{MKFS[fstype][0]} is not installed")
    work = Path(tempfile.mkdtemp(prefix=f"sk-{fstype}-"))
    image = work / "image"
    mnt = work / "mnt"
    mnt.mkdir()
    dev = None
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run([*MKFS[fstype], str(image)], check=True, capture_output=True)
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(["mount", "-t", fstype, dev, str(mnt)], check=True, capture_output=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        shutil.rmtree(work, ignore_errors=True)
