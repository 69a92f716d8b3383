"""--device: a whole device is formatted only when the user says so, and a mounted or
partitioned one only when told twice; on a loop device."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from benchutil import TINY, bench, report


@pytest.fixture
def loopdev(tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        yield dev, mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=True)


def _partition(dev: str) -> None:
    """Write an MS-DOS partition table with one Linux partition (what fdisk would)."""
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, 100 << 11)
    with open(dev, "r+b") as f:
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")
    subprocess.run(["blockdev", "--rereadpt", dev], capture_output=True)


def _signature(dev: str) -> str:
    return subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True,
                          text=True).stdout


def _error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_device_is_refused_without_destroy_data(loopdev, tmp_path):
    dev, _ = loopdev
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
    before = _signature(dev)
    err = _error(bench("--device", dev, "--mkfs", "xfs", "-o", tmp_path / "out", check=False))
    assert err == f"storagekit: --device {dev} wipes everything on it: add --destroy-data"
    assert _signature(dev) == before


def test_mounted_device_is_refused(loopdev, tmp_path):
    dev, mnt = loopdev
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
    subprocess.run(["mount", dev, str(mnt)], check=True)
    (mnt / "precious").write_text("keep me")
    err = _error(bench("--device", dev, "--mkfs", "xfs", "--destroy-data",
                       "-o", tmp_path / "out", check=False))
    assert err == (f"storagekit: {dev} is mounted on {mnt}: give --destroy-data twice to "
                   "unmount and wipe it anyway")
    assert (mnt / "precious").read_text() == "keep me"
    assert "TYPE=\"ext4\"" in _signature(dev) or "TYPE=ext4" in _signature(dev)


def test_partitioned_device_is_refused_once(loopdev, tmp_path):
    dev, _ = loopdev
    _partition(dev)
    err = _error(bench("--device", dev, "--mkfs", "ext4", "--destroy-data",
                       "-o", tmp_path / "out", check=False))
    assert err.startswith(f"storagekit: {dev} holds a partition table (dos): give "
                          "--destroy-data twice")
    assert "PTTYPE" in _signature(dev)


def test_not_a_block_device_is_refused(tmp_path):
    err = _error(bench("--device", tmp_path, "--mkfs", "ext4", "--destroy-data",
                       "-o", tmp_path / "out", check=False))
    assert err == f"storagekit: {tmp_path} is not a block device"


def test_device_formatted_and_benchmarked(loopdev, tmp_path):
    dev, _ = loopdev
    _partition(dev)
    out = tmp_path / "out"
    bench("--device", dev, "--mkfs", "xfs", "--destroy-data", "--destroy-data",
          "--drivers", "vfs,overlay", "--only", "disk", *TINY, "-o", out)
    rep = report(out)
    assert rep["setup"]["device"]["device"] == dev
    assert rep["setup"]["device"]["mkfs"] == "xfs"
    assert rep["setup"]["filesystem"]["type"] == "xfs"
    assert rep["setup"]["disk"]["disk"] == dev
    assert {f["contender"] for f in rep["figures"]} >= {"vfs", "overlay", "host fs"}
    # formatted as asked, and no longer mounted
    assert 'TYPE="xfs"' in _signature(dev) or "TYPE=xfs" in _signature(dev)
    with open("/proc/self/mounts") as f:
        assert not any(line.split()[0] == dev for line in f)
    assert not list(Path("/tmp").glob("storagekit-bench-*/storagekit-bench-*"))
