"""Fixtures shared by every test: real filesystems on loop devices, and leak checks.

Tests run as root (here and in CI). A test that needs a kernel feature or a tool checks for it
and skips with the reason.
"""

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


@pytest.fixture
def xfs_dir() -> Iterator[Path]:
    """A directory on a fresh xfs (reflink=1) loop filesystem."""
    with loop_filesystem("xfs") as mnt:
        yield mnt


@pytest.fixture
def btrfs_dir() -> Iterator[Path]:
    """A directory on a fresh btrfs loop filesystem."""
    with loop_filesystem("btrfs") as mnt:
        yield mnt


@pytest.fixture
def ext4_dir() -> Iterator[Path]:
    """A directory on a fresh ext4 loop filesystem (no reflink)."""
    with loop_filesystem("ext4") as mnt:
        yield mnt
