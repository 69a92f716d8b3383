"""Helpers for the tests of thin pools served by their daemon: a pool directory that is torn
down whatever happens (filesystems unmounted, daemon stopped or killed, dead mounts and loop
devices cleaned), and mounting on the loop devices."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storagekit.engines import thin
from storagekit.engines.thin import loopdev
from storagekit.engines.thin.layout import PoolDir
from storagekit.engines.thin.stale import clean_stale, fuse_mounts

MIB = 1 << 20


def require_fuse_and_loop() -> None:
    if os.geteuid() != 0:
        pytest.skip("thin devices need root (FUSE mounts, loop devices)")
    for dev in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(dev):
            pytest.skip(f"{dev} is missing")


def teardown_pool(d: Path) -> None:
    """Leave nothing of the pool behind: mounts on its loop devices, its daemon, its FUSE
    mount, its loop devices."""
    if not (d / "pool.json").exists():
        return
    pd = PoolDir.at(d)
    for loop in loopdev.loops_backed_by(str(pd.mountpoint)):
        for mnt in loopdev.mounts_of(loop):
            subprocess.run(["umount", "-l", mnt], check=False)
    pid = thin.daemon_pid(d)
    if pid:
        try:
            thin.stop(d)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(d)
    clean_stale(pd)
    assert not fuse_mounts(pd), "the pool's FUSE mount is still there"
    assert not loopdev.loops_backed_by(str(pd.mountpoint)), "loop devices are still attached"


def wait_gone(d: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while thin.daemon_pid(d) is not None:
        assert time.monotonic() < deadline, "the daemon does not exit"
        time.sleep(0.02)


def process_gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether pid has exited with all its threads (its files are closed then): gone, or a
    zombie without threads still on their way out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def fresh_pool(tmp_path: Path) -> Iterator[Path]:
    """For a fixture: a new pool (1 GiB of data, 64 KiB blocks) torn down after the test."""
    require_fuse_and_loop()
    d = tmp_path / "pool"
    thin.create_pool(d, "1G")
    try:
        yield d
    finally:
        teardown_pool(d)


@contextlib.contextmanager
def mounted(dev: str, where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    argv = ["mount", dev, str(where)]
    if options:
        argv[1:1] = ["-o", ",".join(options)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def mkfs(fstype: str, dev: str) -> None:
    argv = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"]}[fstype]
    subprocess.run([*argv, dev], check=True, capture_output=True)


def mapped_blocks(d: Path, dev_id: int) -> int:
    for dev in thin.status(d)["thin_devices"]:
        if dev["id"] == dev_id:
            return dev["mapped_blocks"]
    raise AssertionError(f"no thin device {dev_id}")
