"""A full pool, written through a thin device's loop device: with queue_if_no_space (the
default) a write that needs a new block waits for space (a discard or a delete frees some) up
to the pool's no_space_timeout and then fails; with error_if_no_space it fails at once. The
pool's status says out_of_data_space meanwhile."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pooldaemon import require_fuse_and_loop, teardown_pool
from thinutil import BS, thin_check

from storagekit.engines import thin

BLOCKS = 16  # the pool's data blocks


def pattern(tag: int, size: int = BS) -> mmap.mmap:
    buf = mmap.mmap(-1, size)  # page aligned, for O_DIRECT
    buf.write(bytes([tag]) * size)
    return buf


def direct_write(loop: str, offset: int, tag: int, size: int = BS) -> None:
    fd = os.open(loop, os.O_WRONLY | os.O_DIRECT)
    try:
        os.pwritev(fd, [pattern(tag, size)], offset)
    finally:
        os.close(fd)


def direct_read(loop: str, offset: int, size: int = BS) -> bytes:
    buf = mmap.mmap(-1, size)
    fd = os.open(loop, os.O_RDONLY | os.O_DIRECT)
    try:
        os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)
    return bytes(buf)


class Writer(threading.Thread):
    def __init__(self, loop: str, offset: int, tag: int):
        super().__init__(daemon=True)
        self.loop, self.offset, self.tag = loop, offset, tag
        self.error: OSError | None = None
        self.elapsed = 0.0

    def run(self):
        start = time.monotonic()
        try:
            direct_write(self.loop, self.offset, self.tag)
        except OSError as e:
            self.error = e
        self.elapsed = time.monotonic() - start


def full_pool(d: Path, **features) -> str:
    """A pool of 16 blocks: device 2 (inactive) holds 4, device 1 (active, 32 blocks long)
    the other 12. Returns device 1's loop device."""
    thin.create_pool(d, BLOCKS * BS, block_size=BS, **features)
    thin.message(d, "create_thin 1")
    thin.message(d, "create_thin 2")
    loop2 = thin.activate(d, 2, 4 * BS)
    direct_write(loop2, 0, 2, 4 * BS)
    thin.deactivate(d, 2)
    loop1 = thin.activate(d, 1, 2 * BLOCKS * BS)
    direct_write(loop1, 0, 1, 12 * BS)
    s = thin.status(d)
    assert s["used_data_blocks"] == BLOCKS and s["mode"] == "rw"
    return loop1


@pytest.fixture
def pool_dir(tmp_path):
    require_fuse_and_loop()
    d = tmp_path / "pool"
    try:
        yield d
    finally:
        teardown_pool(d)
    if (d / "metadata").exists():
        thin_check(d / "metadata")


@pytest.mark.parametrize("free", ["delete", "discard"])
def test_a_queued_write_completes_when_space_is_freed(pool_dir, free):
    loop = full_pool(pool_dir, no_space_timeout=60)
    w = Writer(loop, 20 * BS, 7)
    w.start()
    time.sleep(0.5)
    assert w.is_alive(), w.error  # queued
    assert thin.status(pool_dir)["mode"] == "out_of_data_space"
    assert direct_read(loop, 0) == bytes([1]) * BS  # reads go on meanwhile
    if free == "delete":
        thin.message(pool_dir, "delete 2")
    else:
        subprocess.run(["blkdiscard", "-o", "0", "-l", str(2 * BS), loop], check=True)
    w.join(30)
    assert not w.is_alive() and w.error is None
    assert direct_read(loop, 20 * BS) == bytes([7]) * BS
    assert thin.status(pool_dir)["mode"] == "rw"


def test_a_queued_write_fails_after_the_timeout(pool_dir):
    loop = full_pool(pool_dir, no_space_timeout=1.0)
    w = Writer(loop, 20 * BS, 7)
    w.start()
    w.join(30)
    assert not w.is_alive()
    assert w.error is not None and w.error.errno in (errno.ENOSPC, errno.EIO)
    assert 0.8 < w.elapsed < 20
    # past the timeout, writes that need space fail at once until space is found
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        direct_write(loop, 21 * BS, 8)
    assert e.value.errno in (errno.ENOSPC, errno.EIO) and time.monotonic() - start < 0.8
    assert thin.status(pool_dir)["mode"] == "out_of_data_space"
    thin.message(pool_dir, "delete 2")
    direct_write(loop, 21 * BS, 8)
    assert direct_read(loop, 21 * BS) == bytes([8]) * BS


def test_error_if_no_space_fails_at_once(pool_dir):
    loop = full_pool(pool_dir, error_if_no_space=True, no_space_timeout=60)
    assert thin.status(pool_dir)["no_space"] == "error_if_no_space"
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        direct_write(loop, 20 * BS, 7)
    assert e.value.errno in (errno.ENOSPC, errno.EIO) and time.monotonic() - start < 0.8
    assert thin.status(pool_dir)["mode"] == "out_of_data_space"
    direct_write(loop, 0, 9)  # in place: needs no space
    assert direct_read(loop, 0) == bytes([9]) * BS
