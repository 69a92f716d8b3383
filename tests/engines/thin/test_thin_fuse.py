"""The FUSE files of thin devices (storagekit._native.ThinFuse), checked against the pool
they serve: sizes, reads and writes at any offset, fallocate, flush as commit, and what
happens to handles when a file is hidden or the server stops."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pooldaemon import MIB, require_fuse_and_loop
from thinutil import thin_check

from storagekit._native import ThinFuse, ThinPool

BS = 64 << 10
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 1, 2, 16
libc = ctypes.CDLL(None, use_errno=True)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mounted_here(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@pytest.fixture
def served(tmp_path):
    require_fuse_and_loop()
    pool = ThinPool.create(tmp_path / "meta", tmp_path / "data", metadata_size=4 * MIB,
                           data_size=64 * MIB, commit_interval=0)
    mnt = tmp_path / "dev"
    mnt.mkdir()
    fuse = ThinFuse(pool, mnt)
    try:
        yield pool, fuse, mnt
    finally:
        fuse.stop()
        pool.close()
        assert not mounted_here(mnt)
    thin_check(tmp_path / "meta")


def test_files_are_the_devices(served):
    pool, fuse, mnt = served
    pool.message("create_thin 3")
    pool.message("create_thin 12")
    fuse.add(3, 8 * MIB)
    fuse.add(12, 4096)
    assert sorted(os.listdir(mnt)) == ["12", "3"]
    assert fuse.files() == {3: 8 * MIB, 12: 4096}
    st = os.stat(mnt / "3")
    assert (st.st_size, st.st_blocks, st.st_mode & 0o7777) == (8 * MIB, 0, 0o600)
    assert os.statvfs(mnt).f_bsize == BS  # the loop driver's discard granularity
    assert not os.path.exists(mnt / "03") and not os.path.exists(mnt / "4")
    with pytest.raises(OSError) as e:
        fuse.add(3, MIB)
    assert e.value.errno == errno.EEXIST


def test_a_mount_point_whose_name_is_not_utf8(tmp_path):
    """Paths go in as os functions take them and come back as os.fsdecode gives them."""
    require_fuse_and_loop()
    pool = ThinPool.create(os.fsencode(tmp_path / "meta"), tmp_path / "data",
                           metadata_size=4 * MIB, data_size=64 * MIB, commit_interval=0)
    mnt = os.path.join(os.fsencode(tmp_path), b"dev-\xff")
    os.mkdir(mnt)
    try:
        with ThinFuse(pool, mnt) as fuse:
            assert fuse.mountpoint == os.fsdecode(mnt)
            pool.message("create_thin 1")
            fuse.add(1, MIB)
            assert os.listdir(mnt) == [b"1"]
        assert not os.path.ismount(mnt)
    finally:
        pool.close()


def test_reads_and_writes_reach_the_pool(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, 4 * MIB)
    data = os.urandom(3 * BS + 100)
    fd = os.open(mnt / "1", os.O_RDWR)
    try:
        assert os.pwrite(fd, data, BS - 50) == len(data)
        assert pool.read(1, BS - 50, len(data)) == data
        pool.write(1, 3 * MIB, b"from the pool")
        assert os.pread(fd, 13, 3 * MIB) == b"from the pool"
        assert os.pread(fd, 100, 2 * MIB) == bytes(100)  # never written
        assert os.pread(fd, 100, 4 * MIB - 10) == bytes(10)  # short at the end
        assert os.pread(fd, 100, 4 * MIB) == b""
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", 4 * MIB)
        assert e.value.errno == errno.EFBIG
        assert os.pwrite(fd, b"y" * 20, 4 * MIB - 5) == 5  # cut at the end
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, MIB)
        assert e.value.errno == errno.EPERM
        assert os.stat(mnt / "1").st_blocks == 7 * (BS // 512)  # 5 + 1 + 1 blocks mapped
    finally:
        os.close(fd)  # flush: a commit
    assert not pool.status()["transaction_open"]


def test_reads_mix_mapped_blocks_and_holes(served):
    """A read is spliced from the data file in pieces: runs of blocks, holes between."""
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, 4 * MIB)
    model = bytearray(4 * MIB)
    for vb, tag in ((0, 1), (1, 2), (3, 3), (9, 4), (10, 5), (16, 6), (40, 7)):
        data = bytes([tag]) * BS
        pool.write(1, vb * BS, data)
        model[vb * BS : (vb + 1) * BS] = data
    pool.discard(1, 10 * BS, BS)
    model[10 * BS : 11 * BS] = bytes(BS)
    fd = os.open(mnt / "1", os.O_RDONLY)
    try:
        for off, n in ((0, MIB), (BS - 7, 3 * BS + 14), (2 * BS, MIB), (30 * BS, MIB),
                       (4 * MIB - BS - 3, BS + 3), (100, 2 * MIB)):
            assert os.pread(fd, n, off) == bytes(model[off : off + n]), (off, n)
    finally:
        os.close(fd)


def test_fsync_commits(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    pool.commit()
    fuse.add(1, MIB)
    fd = os.open(mnt / "1", os.O_RDWR)
    try:
        os.pwrite(fd, b"data", 0)
        assert pool.status()["transaction_open"]
        commits = pool.status()["commits"]
        os.fsync(fd)
        assert not pool.status()["transaction_open"]
        assert pool.status()["commits"] == commits + 1
    finally:
        os.close(fd)


def test_punch_hole_unmaps_whole_blocks_and_zeroes_the_edges(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, 2 * MIB)
    fd = os.open(mnt / "1", os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff" * (8 * BS), 0)
        # From the middle of block 1 to the middle of block 5: blocks 2-4 go, 1 and 5 stay.
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BS + 100, 4 * BS)
        assert [vb for vb, _, _ in pool.mappings(1)] == [0, 1, 5, 6, 7]
        got = os.pread(fd, 8 * BS, 0)
        assert got == b"\xff" * (BS + 100) + bytes(4 * BS) + b"\xff" * (3 * BS - 100)
        # A zeroed range inside one unmapped block stays unmapped.
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 10 * BS + 5, 100)
        assert [vb for vb, _, _ in pool.mappings(1)] == [0, 1, 5, 6, 7]
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, BS)
        assert os.pread(fd, BS, 0) == bytes(BS)
        fallocate(fd, 0, 0, MIB)  # reserving space: nothing to do in a thin pool
        for mode, off, length in [(FALLOC_FL_PUNCH_HOLE, 0, BS),  # punch needs KEEP_SIZE
                                  (0, MIB, 2 * MIB)]:  # no growing
            with pytest.raises(OSError) as e:
                fallocate(fd, mode, off, length)
            assert e.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)


def test_a_hidden_file_keeps_its_open_handles_until_closed(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, MIB)
    fd = os.open(mnt / "1", os.O_RDWR)
    try:
        assert fuse.opens(1) == 1
        assert fuse.remove(1, 0.1) is False  # still open
        assert os.listdir(mnt) == [] and not os.path.exists(mnt / "1")
        os.pwrite(fd, b"still works", 0)
        assert pool.read(1, 0, 11) == b"still works"
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        fuse.remove(1)
    assert e.value.errno == errno.ENOENT


def test_a_loop_device_over_a_file(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, 16 * MIB)
    loop = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(mnt / "1")],
                          check=True, capture_output=True, text=True).stdout.strip()
    try:
        assert open(f"/sys/block/{loop[5:]}/loop/dio").read().strip() == "1"
        data = os.urandom(MIB)
        with open(loop, "r+b", buffering=0) as f:
            f.seek(5 * MIB)
            f.write(data)
            os.fsync(f.fileno())
        assert pool.read(1, 5 * MIB, MIB) == data
        subprocess.run(["blkdiscard", "-o", str(5 * MIB), "-l", str(MIB), loop], check=True)
        assert pool.mappings(1) == []
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert fuse.remove(1, 5.0) is True


def test_stop_with_a_file_open_aborts_the_connection(served):
    pool, fuse, mnt = served
    pool.message("create_thin 1")
    fuse.add(1, MIB)
    fd = os.open(mnt / "1", os.O_RDWR)
    try:
        assert fuse.stop(0.2) is False
        assert not fuse.running
        with pytest.raises(OSError) as e:
            os.pread(fd, 10, 0)
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    finally:
        with pytest.raises(OSError):  # the flush on close cannot reach the server either
            os.close(fd)
    assert not mounted_here(mnt)


def test_stop_ends_writes_queued_for_space(tmp_path):
    """A write waiting for space (queue_if_no_space) does not hold up stopping the server."""
    require_fuse_and_loop()
    pool = ThinPool.create(tmp_path / "meta", tmp_path / "data", metadata_size=4 * MIB,
                           data_size=2 * BS, commit_interval=0, no_space_timeout=60)
    mnt = tmp_path / "dev"
    mnt.mkdir()
    fuse = ThinFuse(pool, mnt)
    try:
        pool.message("create_thin 1")
        pool.write(1, 0, b"x" * 2 * BS)  # the pool is full
        fuse.add(1, 8 * BS)
        errors: list[int] = []

        def write():
            fd = os.open(mnt / "1", os.O_WRONLY)
            try:
                os.pwrite(fd, b"queued", 4 * BS)
            except OSError as e:
                errors.append(e.errno)
            finally:
                with contextlib.suppress(OSError):  # the flush of a cut-off connection
                    os.close(fd)

        t = threading.Thread(target=write, daemon=True)
        t.start()
        time.sleep(0.3)
        assert t.is_alive() and pool.status()["mode"] == "out_of_data_space"
        start = time.monotonic()
        fuse.stop()
        assert time.monotonic() - start < 10
        t.join(10)
        assert not t.is_alive() and errors and errors[0] in (errno.ENOSPC, errno.ENOTCONN,
                                                              errno.ECONNABORTED)
    finally:
        fuse.stop()
        pool.close()
        assert not mounted_here(mnt)
    thin_check(tmp_path / "meta")
