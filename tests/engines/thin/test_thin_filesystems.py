"""Real filesystems on thin devices: made through the loop device the daemon attaches, their
files surviving deactivation, snapshots mounted beside their origin, discards unmapping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pooldaemon import MIB, fresh_pool, mapped_blocks, mkfs, mounted

from storagekit.engines import thin


@pytest.fixture
def pool_dir(tmp_path):
    yield from fresh_pool(tmp_path)


def write_tree(root: Path, tag: str, count: int = 20) -> dict[str, bytes]:
    files = {}
    (root / "sub").mkdir(exist_ok=True)
    for i in range(count):
        name = f"sub/f{i:02d}" if i % 2 else f"f{i:02d}"
        data = (f"{tag}:{i}:".encode() * 4096)[: 1000 + i * 7919]
        (root / name).write_bytes(data)
        files[name] = data
    return files


def read_tree(root: Path, names) -> dict[str, bytes]:
    return {n: (root / n).read_bytes() for n in names}


def fsck(fstype: str, dev: str) -> None:
    argv = ["fsck.ext4", "-fn", dev] if fstype == "ext4" else ["xfs_repair", "-n", dev]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, f"{argv[0]} on {dev}:\n{r.stdout}\n{r.stderr}"


def test_ext4_files_survive_deactivate_and_reactivate(pool_dir, tmp_path):
    thin.message(pool_dir, "create_thin 1")
    loop = thin.activate(pool_dir, 1, "256M")
    assert loop.startswith("/dev/loop")
    assert int(open(f"/sys/block/{loop[5:]}/size").read()) * 512 == 256 * MIB
    mkfs("ext4", loop)
    with mounted(loop, tmp_path / "mnt") as mnt:
        files = write_tree(mnt, "origin")
    thin.deactivate(pool_dir, 1)
    assert thin.active(pool_dir) == {}

    loop = thin.activate(pool_dir, 1)  # the size recorded last time
    assert int(open(f"/sys/block/{loop[5:]}/size").read()) * 512 == 256 * MIB
    fsck("ext4", loop)
    with mounted(loop, tmp_path / "mnt") as mnt:
        assert read_tree(mnt, files) == files
    thin.deactivate(pool_dir, 1)
    thin.check(pool_dir)
    # Only what ext4 wrote is mapped: the device is thin.
    assert 0 < mapped_blocks(pool_dir, 1) < (256 * MIB) // (64 << 10) // 2


def test_snapshot_of_a_mounted_origin_diverges_while_both_are_live(pool_dir, tmp_path):
    thin.message(pool_dir, "create_thin 1")
    origin = thin.activate(pool_dir, 1, "128M")
    mkfs("ext4", origin)
    with mounted(origin, tmp_path / "origin") as omnt:
        before = write_tree(omnt, "base")
        # Taken while mounted and written to: the daemon freezes the filesystem around it.
        thin.message(pool_dir, "create_snap 2 1")
        snap = thin.activate(pool_dir, 2)  # inherits the origin's size
        assert snap != origin
        # ext4 does not mind the snapshot's uuid being the origin's.
        with mounted(snap, tmp_path / "snap") as smnt:
            assert read_tree(smnt, before) == before
            (smnt / "f00").write_bytes(b"changed in the snapshot")
            (smnt / "only-in-snap").write_bytes(b"snap")
            (omnt / "f02").write_bytes(b"changed in the origin")
            (omnt / "sub" / "f01").unlink()
            os.sync()
            assert (smnt / "f02").read_bytes() == before["f02"]
            assert (smnt / "sub" / "f01").read_bytes() == before["sub/f01"]
            assert (omnt / "f00").read_bytes() == before["f00"]
            assert not (omnt / "only-in-snap").exists()
    fsck("ext4", origin)
    fsck("ext4", snap)
    with mounted(snap, tmp_path / "snap") as smnt:
        assert (smnt / "f00").read_bytes() == b"changed in the snapshot"
        assert (smnt / "f02").read_bytes() == before["f02"]
    with mounted(origin, tmp_path / "origin") as omnt:
        assert (omnt / "f02").read_bytes() == b"changed in the origin"
        assert not (omnt / "sub" / "f01").exists()
    status = thin.status(pool_dir)
    devices = {d["id"]: d for d in status["thin_devices"]}
    assert devices[2]["size"] == devices[1]["size"] == 128 * MIB
    assert devices[1]["loop"] == origin and devices[2]["loop"] == snap
    thin.deactivate(pool_dir, 2)
    thin.deactivate(pool_dir, 1)
    thin.check(pool_dir)


def test_xfs_on_a_thin_device_and_its_snapshot(pool_dir, tmp_path):
    thin.message(pool_dir, "create_thin 7")
    loop = thin.activate(pool_dir, 7, "512M")  # mkfs.xfs wants at least 300 MiB
    mkfs("xfs", loop)
    with mounted(loop, tmp_path / "mnt") as mnt:
        files = write_tree(mnt, "xfs")
    thin.message(pool_dir, "create_snap 8 7")
    snap = thin.activate(pool_dir, 8)
    with mounted(loop, tmp_path / "mnt") as mnt, \
            mounted(snap, tmp_path / "snap", "nouuid") as smnt:
        (smnt / "f00").write_bytes(b"snap")
        assert read_tree(mnt, files) == files
    thin.deactivate(pool_dir, 7)
    loop = thin.activate(pool_dir, 7)
    fsck("xfs", loop)
    fsck("xfs", snap)
    with mounted(loop, tmp_path / "mnt") as mnt:
        assert read_tree(mnt, files) == files
    thin.deactivate(pool_dir, 8)
    thin.deactivate(pool_dir, 7)
    thin.check(pool_dir)


def test_fstrim_through_the_loop_device_unmaps_blocks(pool_dir, tmp_path):
    thin.message(pool_dir, "create_thin 1")
    loop = thin.activate(pool_dir, 1, "256M")
    # The loop device takes its discard granularity from the FUSE statfs: one data block.
    assert int(open(f"/sys/block/{loop[5:]}/queue/discard_granularity").read()) == 64 << 10
    mkfs("ext4", loop)
    with mounted(loop, tmp_path / "mnt") as mnt:
        with open(mnt / "big", "wb") as f:
            f.write(os.urandom(32 * MIB))
        os.sync()
        full = mapped_blocks(pool_dir, 1)
        used_before = thin.status(pool_dir)["used_data_blocks"]
        (mnt / "big").unlink()
        os.sync()
        subprocess.run(["fstrim", str(mnt)], check=True, capture_output=True)
        trimmed = mapped_blocks(pool_dir, 1)
        # 32 MiB is 512 blocks; ext4 keeps a few of them for its own metadata.
        assert full - trimmed >= 480, (full, trimmed)
        with open(loop, "rb") as dev:  # the device commits on flush: the space comes back
            os.fsync(dev.fileno())
        assert used_before - thin.status(pool_dir)["used_data_blocks"] >= 480
    thin.deactivate(pool_dir, 1)
    thin.check(pool_dir)
