"""The thin-provisioning engine (storagekit._native.ThinPool): dm-thin's semantics, and its
metadata judged by thin-provisioning-tools after every test (thin_check, thin_dump)."""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
import threading
import time

import pytest
from thinmeta import Metadata, reseal_superblock
from thinutil import BS, close_and_verify, new_pool, shared_bytes, thin_check, thin_dump

from storagekit._native import ThinPool


def block(tag: int, size: int = BS) -> bytes:
    return tag.to_bytes(8, "little") * (size // 8)


# ------------------------------------------------------------------------------ status


def test_new_pool_status(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    s = pool.status()
    assert re.fullmatch(
        r"0 \d+/1024 0/256 - rw discard_passdown queue_if_no_space - 256", s["line"]
    ), s["line"]
    assert s["total_metadata_blocks"] == 1024 and s["total_data_blocks"] == 256
    assert s["data_block_size"] == 128 and pool.block_size == BS
    assert s["held_metadata_root"] is None and not s["needs_check"]
    assert pool.status_line() == s["line"] and pool.devices() == []
    dump = close_and_verify(pool, meta)
    assert dump.attrs["version"] == "2" and dump.devices == {}


def test_feature_flags_in_status_line(tmp_path):
    pool, meta, _ = new_pool(tmp_path, error_if_no_space=True, ignore_discard=True)
    assert pool.status_line().split()[5:7] == ["ignore_discard", "error_if_no_space"]
    close_and_verify(pool, meta)
    pool = ThinPool.open(meta, tmp_path / "data", no_discard_passdown=True, commit_interval=0)
    assert pool.status_line().split()[5:7] == ["no_discard_passdown", "queue_if_no_space"]
    close_and_verify(pool, meta)


# --------------------------------------------------------------------------- data path


def test_reads_and_writes_at_any_offset(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 7")
    size = 10 * BS
    model = bytearray(size)
    rng = random.Random(1)
    for _ in range(40):
        off = rng.randrange(size - 1)
        n = rng.randrange(1, min(3 * BS, size - off))
        data = rng.randbytes(n)
        pool.write(7, off, data)
        model[off : off + n] = data
        a = rng.randrange(size)
        b = rng.randrange(a, size + 1)
        assert pool.read(7, a, b - a) == bytes(model[a:b])
    assert pool.read(7, 0, size) == bytes(model)
    assert pool.read(7, 50 * BS, 100) == bytes(100)  # never written: zeros
    pool.write(7, 0, memoryview(bytearray(b"view")))
    assert pool.read(7, 0, 4) == b"view"
    mapped = sorted({vb for vb, _, _ in pool.mappings(7)})
    st = pool.device_status(7)
    assert st["mapped_blocks"] == len(mapped) and st["mapped_sectors"] == len(mapped) * 128
    assert st["highest_mapped_sector"] == (mapped[-1] + 1) * 128 - 1
    assert st["line"] == f"{len(mapped) * 128} {(mapped[-1] + 1) * 128 - 1}"
    close_and_verify(pool, meta)


def test_empty_device_status(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 0")
    st = pool.device_status(0)
    assert st["mapped_sectors"] == 0 and st["highest_mapped_sector"] is None
    assert st["line"] == "0 -"
    close_and_verify(pool, meta)


def test_partial_write_zeroes_the_rest_of_a_new_block(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    with open(data, "r+b") as f:  # stale bytes everywhere in the data device
        f.write(b"\xff" * (16 << 20))
    pool.message("create_thin 1")
    pool.write(1, 100, b"abc")
    got = pool.read(1, 0, BS)
    assert got == bytes(100) + b"abc" + bytes(BS - 103)
    close_and_verify(pool, meta)


def test_skip_block_zeroing_leaves_old_bytes(tmp_path):
    pool, meta, data = new_pool(tmp_path, skip_block_zeroing=True)
    with open(data, "r+b") as f:
        f.write(b"\xff" * (16 << 20))
    pool.message("create_thin 1")
    pool.write(1, 100, b"abc")
    got = pool.read(1, 0, BS)
    assert got[100:103] == b"abc" and got[:100] == b"\xff" * 100
    close_and_verify(pool, meta)


def test_snapshot_shares_blocks_and_copies_on_first_write(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    for vb in range(6):
        pool.write(1, vb * BS, block(vb))
    pool.message("create_snap 2 1")
    assert pool.mappings(2) == pool.mappings(1)  # the same data blocks
    used = pool.status()["used_data_blocks"]
    pool.write(1, 2 * BS + 10, b"new")  # partial: the rest comes from the old block
    pool.write(2, 4 * BS, block(99))  # whole block: nothing to copy
    assert pool.status()["used_data_blocks"] == used + 2
    assert pool.read(1, 2 * BS, BS) == block(2)[:10] + b"new" + block(2)[13:]
    assert pool.read(2, 2 * BS, BS) == block(2)
    assert pool.read(2, 4 * BS, BS) == block(99) and pool.read(1, 4 * BS, BS) == block(4)
    m1, m2 = (
        dict((v, d) for v, d, _ in pool.mappings(1)),
        dict((v, d) for v, d, _ in pool.mappings(2)),
    )
    assert [vb for vb in m1 if m1[vb] != m2[vb]] == [2, 4]
    # the second write to the copied block happens in place
    pool.write(1, 2 * BS, b"again")
    assert dict((v, d) for v, d, _ in pool.mappings(1))[2] == m1[2]
    # snapshot of a snapshot, then the origin goes away
    pool.message("create_snap 3 2")
    pool.message("delete 1")
    assert pool.read(3, 4 * BS, BS) == block(99) and pool.read(3, 0, BS) == block(0)
    dump = close_and_verify(pool, meta)
    assert dump.devices[2].mappings == dump.devices[3].mappings
    assert int(dump.attrs["time"]) == 2


def test_reference_counts_above_two(tmp_path):
    """Ten snapshots of one origin, each written once: every leaf copy holds a reference to the
    untouched data blocks, whose counts (11) live in the space maps' ref-count btrees."""
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 0")
    pool.write(0, 0, block(0, 8 * BS))
    for i in range(1, 11):
        pool.message(f"create_snap {i} 0")
    for i in range(1, 11):
        pool.write(i, i % 8 * BS, block(i))
        pool.commit()
    for i in range(1, 11):
        want = bytearray(block(0, 8 * BS))
        want[i % 8 * BS : (i % 8 + 1) * BS] = block(i)
        assert pool.read(i, 0, 8 * BS) == want
    close_and_verify(pool, meta)  # includes the data space map, counts above 2 too
    md = Metadata.read(meta)
    counts = md.data_counts()
    assert max(counts) >= 10
    assert list(md.walk(md.superblock().data_sm[3]))  # the data ref-count tree is in use


def test_snapshot_is_constant_cost(tmp_path):
    """Snapshotting shares the origin's mapping tree: the commit writes the same handful of
    metadata blocks for 300 or 5000 mapped blocks, and both ids point at one tree root."""
    pool, meta, _ = new_pool(tmp_path, meta_mib=8, data_mib=512, skip_block_zeroing=True)
    cost = {}
    for dev, n in ((1, 300), (2, 5000)):
        pool.message(f"create_thin {dev}")
        for vb in range(n):
            pool.write(dev, vb * BS, b"x")
        pool.commit()
        before = pool.status()["metadata_blocks_written"]
        pool.message(f"create_snap {dev + 10} {dev}")
        pool.commit()
        s = pool.status()
        cost[n] = s["last_commit_blocks_written"]
        assert s["metadata_blocks_written"] - before + 1 == cost[n]
        roots = Metadata.read(meta).device_roots()
        assert roots[dev] == roots[dev + 10]
    assert cost[300] == cost[5000] <= 8, cost
    close_and_verify(pool, meta)


@pytest.mark.parametrize("fs", ["xfs_dir", "ext4_dir"])
def test_copy_on_write_reflinks_where_the_filesystem_can(request, fs):
    root = request.getfixturevalue(fs)
    pool, meta, data = new_pool(root)
    try:  # closed even when an assertion fails, or the filesystem cannot be unmounted
        pool.message("create_thin 1")
        pool.write(1, 0, block(7, 4 * BS))
        pool.message("create_snap 2 1")
        pool.write(1, BS + 8192, b"z" * 4096)  # partial: copies the rest of the old block
        new = dict((v, d) for v, d, _ in pool.mappings(1))[1]
        assert pool.read(1, BS, BS) == block(7)[:8192] + b"z" * 4096 + block(7)[12288:]
        assert pool.read(2, BS, BS) == block(7)
        pool.commit()
        shared = shared_bytes(data, new * BS, BS)
        if fs == "xfs_dir":  # copy_file_range cloned the block; only the new page is private
            assert shared == BS - 4096
        else:
            assert shared == 0
        close_and_verify(pool, meta)
    finally:
        pool.close()


def test_discard_unmaps_whole_blocks_and_frees_them(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, block(1, 4 * BS))
    pool.commit()
    used = pool.status()["used_data_blocks"]
    d1 = dict((v, d) for v, d, _ in pool.mappings(1))[1]
    pool.discard(1, BS // 2, 2 * BS)  # covers block 1 only; halves of 0 and 2 stay
    assert sorted(v for v, _, _ in pool.mappings(1)) == [0, 2, 3]
    assert pool.read(1, 0, 4 * BS) == block(1, BS) + bytes(BS) + block(1, 2 * BS)
    pool.commit()
    assert pool.status()["used_data_blocks"] == used - 1
    with open(data, "rb") as f:  # passed down: a hole in the data file
        f.seek(d1 * BS)
        assert f.read(BS) == bytes(BS)
    close_and_verify(pool, meta)


def test_discard_of_shared_block_keeps_it_for_the_snapshot(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, block(5, 2 * BS))
    pool.message("create_snap 2 1")
    pool.discard(1, 0, 2 * BS)
    pool.commit()
    assert pool.read(1, 0, 2 * BS) == bytes(2 * BS)
    assert pool.read(2, 0, 2 * BS) == block(5, 2 * BS)
    assert pool.status()["used_data_blocks"] == 2
    close_and_verify(pool, meta)


@pytest.mark.parametrize("flag", ["ignore_discard", "no_discard_passdown"])
def test_discard_flags(tmp_path, flag):
    pool, meta, data = new_pool(tmp_path, **{flag: True})
    pool.message("create_thin 1")
    pool.write(1, 0, block(3))
    db = pool.mappings(1)[0][1]
    pool.discard(1, 0, BS)
    pool.commit()
    with open(data, "rb") as f:
        f.seek(db * BS)
        assert f.read(BS) == block(3)  # never passed down
    if flag == "ignore_discard":
        assert pool.read(1, 0, BS) == block(3)
    else:
        assert pool.mappings(1) == [] and pool.read(1, 0, BS) == bytes(BS)
    close_and_verify(pool, meta)


# ----------------------------------------------------------------------- out of space


@pytest.mark.parametrize("error_if_no_space", [False, True])
def test_out_of_data_space(tmp_path, error_if_no_space):
    meta, data = tmp_path / "meta", tmp_path / "data"
    pool = ThinPool.create(
        meta,
        data,
        metadata_size=4 << 20,
        data_size=8 * BS,
        error_if_no_space=error_if_no_space,
        commit_interval=0,
        no_space_timeout=0,  # queue_if_no_space: no waiting (see the tests below)
    )
    pool.message("create_thin 1")
    pool.write(1, 0, block(1, 8 * BS))
    with pytest.raises(OSError) as e:
        pool.write(1, 8 * BS, b"one more")
    assert e.value.errno == errno.ENOSPC
    s = pool.status()
    assert s["mode"] == "out_of_data_space" and s["used_data_blocks"] == 8
    assert s["line"].split()[4] == "out_of_data_space"
    no_space = "error_if_no_space" if error_if_no_space else "queue_if_no_space"
    assert s["line"].split()[6] == no_space
    pool.write(1, 3 * BS, b"in place still works")
    # a snapshot's first write needs a new block too
    pool.message("create_snap 2 1")
    with pytest.raises(OSError) as e:
        pool.write(2, 0, b"cow")
    assert e.value.errno == errno.ENOSPC
    # freeing space (in this very transaction) makes writes work again
    pool.message("delete 2")
    pool.discard(1, 0, BS)
    pool.write(1, 8 * BS, b"one more")
    assert pool.status()["mode"] == "rw"
    assert pool.read(1, 8 * BS, 8) == b"one more"
    close_and_verify(pool, meta)


def full_pool(tmp_path, **kw) -> ThinPool:
    """A pool of 8 blocks: device 1 maps blocks 0..5, device 2 (not a snapshot) maps 6..7."""
    pool = ThinPool.create(tmp_path / "meta", tmp_path / "data", metadata_size=4 << 20,
                           data_size=8 * BS, commit_interval=0, **kw)
    pool.message("create_thin 1")
    pool.message("create_thin 2")
    pool.write(1, 0, block(1, 6 * BS))
    pool.write(2, 0, block(2, 2 * BS))
    pool.commit()
    return pool


class Writer(threading.Thread):
    """pool.write in a thread: .error is the OSError it ended with, .elapsed its duration."""

    def __init__(self, pool, dev, offset, data):
        super().__init__(daemon=True)
        self.args_ = (pool, dev, offset, data)
        self.error: OSError | None = None
        self.elapsed = 0.0

    def run(self):
        pool, dev, offset, data = self.args_
        start = time.monotonic()
        try:
            pool.write(dev, offset, data)
        except OSError as e:
            self.error = e
        self.elapsed = time.monotonic() - start


@pytest.mark.parametrize("free", ["discard", "delete"])
def test_queue_if_no_space_waits_for_space(tmp_path, free):
    pool = full_pool(tmp_path, no_space_timeout=30)
    w = Writer(pool, 1, 7 * BS, b"queued")
    w.start()
    time.sleep(0.3)
    assert w.is_alive()  # waiting for space, the pool says so
    assert pool.status()["mode"] == "out_of_data_space"
    assert pool.read(1, 0, 8) == block(1, 8)  # the rest of the pool goes on meanwhile
    pool.write(1, BS, block(3))  # in place: needs no space
    if free == "discard":
        pool.discard(2, 0, BS)
    else:
        pool.message("delete 2")
    w.join(10)
    assert not w.is_alive() and w.error is None
    assert pool.read(1, 7 * BS, 6) == b"queued"
    assert pool.status()["mode"] == "rw"
    close_and_verify(pool, tmp_path / "meta")


def test_queue_if_no_space_times_out(tmp_path):
    """As the kernel's no_space_timeout: counted from when the pool ran out; after it, writes
    that need space fail at once, until space is found."""
    pool = full_pool(tmp_path, no_space_timeout=0.5)
    w = Writer(pool, 1, 7 * BS, b"queued")
    w.start()
    w.join(10)
    assert w.error is not None and w.error.errno == errno.ENOSPC
    assert 0.4 < w.elapsed < 5
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        pool.write(1, 6 * BS, b"later")
    assert e.value.errno == errno.ENOSPC and time.monotonic() - start < 0.3
    assert pool.status()["mode"] == "out_of_data_space"
    pool.discard(2, 0, 2 * BS)
    pool.write(1, 6 * BS, b"later")
    assert pool.status()["mode"] == "rw"
    close_and_verify(pool, tmp_path / "meta")


def test_error_if_no_space_fails_at_once(tmp_path):
    pool = full_pool(tmp_path, error_if_no_space=True, no_space_timeout=30)
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        pool.write(1, 7 * BS, b"no")
    assert e.value.errno == errno.ENOSPC and time.monotonic() - start < 0.3
    close_and_verify(pool, tmp_path / "meta")


def test_close_ends_a_queued_write(tmp_path):
    pool = full_pool(tmp_path, no_space_timeout=30)
    w = Writer(pool, 1, 7 * BS, b"queued")
    w.start()
    time.sleep(0.2)
    pool.close()
    w.join(10)
    assert not w.is_alive() and w.error is not None and w.error.errno == errno.EBADF
    thin_check(tmp_path / "meta")


def test_out_of_metadata_space(tmp_path):
    """As dm-thin: the failed transaction is dropped, the pool goes back to its last commit,
    marked needs_check and read-only."""
    meta, data = tmp_path / "meta", tmp_path / "data"
    pool = ThinPool.create(
        meta,
        data,
        metadata_size=256 << 10,
        data_size=1 << 30,
        skip_block_zeroing=True,
        commit_interval=0,
        max_transaction_blocks=10**6,  # only the explicit commits below
    )
    pool.message("create_thin 1")
    committed = 0
    with pytest.raises(OSError) as e:
        for vb in range(100000):
            pool.write(1, vb * BS, b"x")
            if vb % 500 == 499:
                pool.commit()
                committed = vb + 1
    assert e.value.errno == errno.ENOSPC and "metadata" in str(e.value)
    s = pool.status()
    assert s["mode"] == "ro" and s["needs_check"]
    assert pool.device_status(1)["mapped_blocks"] == committed
    with pytest.raises(OSError) as e:
        pool.write(1, 0, b"x")
    assert e.value.errno == errno.EROFS
    pool.close()
    thin_check(meta)
    pool = ThinPool.open(meta, data)
    assert pool.status()["mode"] == "ro" and pool.read(1, BS, 1) == b"x"
    pool.close()


def fill_filesystem(path):
    """Allocate every free block of the filesystem holding path (root may use the reserve)."""
    with open(path, "wb") as f:
        off = 0
        for chunk in (64 << 20, 4 << 20, 256 << 10, 4 << 10):
            while True:
                try:
                    os.posix_fallocate(f.fileno(), off, chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
                off += chunk


def test_host_filesystem_full_under_a_sparse_data_file(ext4_dir):
    """The data file is sparse, so the filesystem under it can fill up before the pool does:
    the write fails with ENOSPC, the pool stays usable and its metadata (allocated up front)
    still commits."""
    pool, meta, data = new_pool(ext4_dir, data_mib=1024)
    try:
        assert os.stat(meta).st_blocks * 512 >= 4 << 20  # metadata allocated
        pool.message("create_thin 1")
        pool.write(1, 0, block(0))
        fill_filesystem(ext4_dir / "filler")
        with pytest.raises(OSError) as e:
            for vb in range(1, 100):
                pool.write(1, vb * BS, block(vb))
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(data)
        s = pool.status()
        assert s["mode"] == "rw" and not s["needs_check"]
        mapped = [vb for vb, _, _ in pool.mappings(1)]
        assert mapped == list(range(len(mapped)))
        pool.commit()
        (ext4_dir / "filler").unlink()
        pool.write(1, 200 * BS, block(200))
        for vb in mapped + [200]:
            assert pool.read(1, vb * BS, BS) == block(vb)
        close_and_verify(pool, meta)
    finally:
        pool.close()


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("sectors", [64, 129, 200, 2097152 + 128, 0])
def test_data_block_size_out_of_bounds(tmp_path, sectors):
    with pytest.raises(ValueError, match="multiple of 128"):
        new_pool(tmp_path, data_block_size=sectors)


@pytest.mark.parametrize("sectors", [128, 1024, 2097152])
def test_data_block_size_bounds(tmp_path, sectors):
    pool = ThinPool.create(
        tmp_path / "meta",
        tmp_path / "data",
        data_block_size=sectors,
        metadata_size=4 << 20,
        data_size=max(16 << 20, 2 * sectors * 512),
        commit_interval=0,
    )
    assert pool.block_size == sectors * 512
    pool.message("create_thin 1")
    pool.write(1, sectors * 512 - 3, b"edge")  # straddles the first two blocks
    assert pool.read(1, sectors * 512 - 3, 4) == b"edge"
    dump = close_and_verify(pool, tmp_path / "meta")
    assert dump.attrs["data_block_size"] == str(sectors)


def test_device_ids_are_24_bit(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 16777215")
    pool.message("create_snap 0 16777215")
    for bad in (
        "create_thin 16777216",
        "create_snap 16777216 0",
        "create_snap 1 16777216",
        "delete 16777216",
        "create_thin -1",
        "create_thin 0x10",
        "create_thin",
        "create_thin 1 2",
        "frobnicate 1",
        "",
        "set_transaction_id 0",
    ):
        with pytest.raises(OSError) as e:
            pool.message(bad)
        assert e.value.errno == errno.EINVAL, bad
    assert pool.devices() == [0, 16777215]
    close_and_verify(pool, meta)


def test_message_errors(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    for msg, err in (
        ("create_thin 1", errno.EEXIST),
        ("create_snap 1 1", errno.EEXIST),
        ("create_snap 2 9", errno.ENODATA),
        ("delete 9", errno.ENODATA),
        ("release_metadata_snap", errno.EINVAL),
    ):
        with pytest.raises(OSError) as e:
            pool.message(msg)
        assert e.value.errno == err, msg
    for call in (
        lambda: pool.read(9, 0, 1),
        lambda: pool.write(9, 0, b"x"),
        lambda: pool.discard(9, 0, BS),
        lambda: pool.device_status(9),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.ENODATA
    assert pool.devices() == [1]
    close_and_verify(pool, meta)


def test_set_transaction_id_is_compare_and_swap(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    with pytest.raises(OSError) as e:
        pool.message("set_transaction_id 1 2")
    assert e.value.errno == errno.EINVAL
    pool.message("set_transaction_id 0 5")
    pool.message("create_thin 3")  # details record the pool's id at creation
    pool.message("set_transaction_id 5 18446744073709551615")
    assert pool.status()["transaction_id"] == 2**64 - 1
    dump = close_and_verify(pool, meta)
    assert dump.attrs["transaction"] == str(2**64 - 1)
    assert dump.devices[3].transaction == 5


def test_delete_frees_unshared_blocks(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, block(1, 5 * BS))
    pool.message("create_snap 2 1")
    pool.write(2, 0, block(2, 2 * BS))
    pool.commit()
    assert pool.status()["used_data_blocks"] == 7
    pool.message("delete 1")
    pool.commit()
    assert pool.status()["used_data_blocks"] == 5
    pool.message("delete 2")
    pool.commit()
    assert pool.status()["used_data_blocks"] == 0
    close_and_verify(pool, meta)


def test_metadata_snapshot(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, block(1, 2 * BS))
    pool.message("reserve_metadata_snap")
    held = pool.status()["held_metadata_root"]
    assert held and pool.status_line().split()[3] == str(held)
    with pytest.raises(OSError) as e:
        pool.message("reserve_metadata_snap")
    assert e.value.errno == errno.EBUSY
    pool.write(1, 0, block(9))  # the snapshot keeps the old mapping
    pool.message("create_thin 2")
    pool.write(2, 0, block(2))
    pool.message("delete 1")
    pool.commit()
    snap = thin_dump(meta, "-m")  # read while the pool is open: -m is meant for that
    assert list(snap.devices) == [1] and len(snap.devices[1].mappings) == 2
    close_and_verify(pool, meta)
    pool = ThinPool.open(meta, tmp_path / "data", commit_interval=0)
    assert pool.status()["held_metadata_root"] == held
    pool.message("release_metadata_snap")
    assert pool.status()["held_metadata_root"] is None and pool.status_line().split()[3] == "-"
    close_and_verify(pool, meta)


# ----------------------------------------------------------------- opening and closing


def test_reopen_keeps_everything(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.message("create_thin 4")
    pool.write(4, 12345, b"persist" * 1000)
    pool.message("create_snap 5 4")
    pool.message("set_transaction_id 0 1")
    before = pool.mappings(4), pool.mappings(5), pool.status()["time"]
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(OSError) as e:
        pool.read(4, 0, 1)
    assert e.value.errno == errno.EBADF
    with ThinPool.open(meta, data, commit_interval=0) as pool:
        assert (pool.mappings(4), pool.mappings(5), pool.status()["time"]) == before
        assert pool.read(5, 12345, 7) == b"persist"
        assert pool.status()["transaction_id"] == 1
    assert pool.closed
    thin_check(meta)


def test_open_refuses_what_is_not_pool_metadata(tmp_path):
    meta, data = tmp_path / "meta", tmp_path / "data"
    data.write_bytes(bytes(BS * 4))
    meta.write_bytes(bytes(1 << 20))
    with pytest.raises(ValueError, match="bad magic"):
        ThinPool.open(meta, data)
    pool, meta, data = new_pool(tmp_path)
    pool.close()
    with open(meta, "r+b") as f:
        f.seek(200)
        f.write(b"\x01")
    with pytest.raises(ValueError, match="checksum"):
        ThinPool.open(meta, data)
    with pytest.raises(FileNotFoundError):
        ThinPool.open(tmp_path / "missing", data)


def test_data_device_must_hold_the_pool(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.close()
    os.truncate(data, 8 << 20)
    with pytest.raises(ValueError, match="too small"):
        ThinPool.open(meta, data)


def test_growing_the_data_device(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, b"x")
    pool.close()
    os.truncate(data, 4 << 30)  # crosses a space map bitmap boundary (16320 blocks)
    pool = ThinPool.open(meta, data, commit_interval=0)
    assert pool.status()["total_data_blocks"] == 65536
    pool.write(1, 70000 * BS, b"far")
    dump = close_and_verify(pool, meta)
    assert dump.attrs["nr_data_blocks"] == "65536"


def test_needs_check_opens_read_only(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, b"data")
    pool.close()
    reseal_superblock(meta, flags_or=1)
    pool = ThinPool.open(meta, data)
    s = pool.status()
    assert s["needs_check"] and s["mode"] == "ro"
    assert s["line"].split()[4] == "ro" and s["line"].split()[7] == "needs_check"
    assert pool.read(1, 0, 4) == b"data"
    for call in (
        lambda: pool.write(1, 0, b"x"),
        lambda: pool.message("create_thin 2"),
        lambda: pool.discard(1, 0, BS),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EROFS
    pool.close()
    thin_check(meta, "--clear-needs-check-flag")
    pool = ThinPool.open(meta, data, commit_interval=0)
    assert pool.status()["mode"] == "rw"
    pool.write(1, 0, b"more")
    close_and_verify(pool, meta)


def test_read_only_open(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.close()
    before = meta.read_bytes()
    pool = ThinPool.open(meta, data, read_only=True)
    assert pool.status()["mode"] == "ro"
    with pytest.raises(OSError) as e:
        pool.write(1, 0, b"x")
    assert e.value.errno == errno.EROFS
    pool.close()
    assert meta.read_bytes() == before
    (tmp_path / "new").mkdir()
    with pytest.raises(ValueError, match="read-only"):
        new_pool(tmp_path / "new", read_only=True)


def test_one_pool_per_metadata_device(tmp_path):
    pool, meta, data = new_pool(tmp_path)
    with pytest.raises(OSError) as e:
        ThinPool.open(meta, data)
    assert e.value.errno == errno.EBUSY
    close_and_verify(pool, meta)


# ---------------------------------------------------------------------------- commits


def test_commits_by_itself_every_interval(tmp_path):
    pool, meta, _ = new_pool(tmp_path, commit_interval=0.2)
    pool.message("create_thin 1")
    pool.write(1, 0, b"soon durable")
    assert pool.status()["transaction_open"]
    deadline = time.monotonic() + 30
    while pool.status()["transaction_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pool.status()["transaction_open"]
    # committed while still open: the superblock on disk already has the device
    assert list(thin_dump(meta).devices) == [1]
    close_and_verify(pool, meta)


def test_commit_without_changes_writes_nothing(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    written = pool.status()["metadata_blocks_written"]
    commits = pool.status()["commits"]
    for _ in range(5):
        pool.commit()
        pool.flush()
    assert pool.status()["metadata_blocks_written"] == written
    assert pool.status()["commits"] == commits
    close_and_verify(pool, meta)


def test_large_transactions_commit_early(tmp_path):
    pool, meta, _ = new_pool(tmp_path, max_transaction_blocks=16, data_mib=64)
    commits = pool.status()["commits"]
    for dev in range(40):  # each device's tree starts with a new metadata block
        pool.message(f"create_thin {dev}")
        pool.write(dev, dev * BS, b"spread")
    assert pool.status()["commits"] > commits
    assert pool.status()["transaction_open"]  # the tail is not committed yet
    close_and_verify(pool, meta)


# ------------------------------------------------------------------------- concurrency


def test_snapshots_of_an_origin_being_written(tmp_path):
    """Each snapshot is an atomic picture: the writer fills blocks 0..n-1 in order, round
    after round, so a snapshot shows round r+1 up to some block and round r after it."""
    pool, meta, _ = new_pool(tmp_path, data_mib=64)
    pool.message("create_thin 1")
    n, stop = 16, threading.Event()

    def writer():
        r = 1
        while not stop.is_set():
            for vb in range(n):
                pool.write(1, vb * BS, r.to_bytes(8, "little") + vb.to_bytes(8, "little"))
            r += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(2, 12):
            time.sleep(0.01)
            pool.message(f"create_snap {i} 1")
    finally:
        stop.set()
        t.join()
    for i in range(2, 12):
        rounds = [int.from_bytes(pool.read(i, vb * BS, 8), "little") for vb in range(n)]
        assert all(
            pool.read(i, vb * BS + 8, 8) == vb.to_bytes(8, "little")
            for vb in range(n)
            if rounds[vb]
        )
        top = rounds[0]
        cut = next((k for k, r in enumerate(rounds) if r != top), n)
        assert all(r == top - 1 for r in rounds[cut:]), rounds
    close_and_verify(pool, meta)


def test_devices_written_from_many_threads(tmp_path):
    pool, meta, _ = new_pool(tmp_path, data_mib=64)
    for dev in range(4):
        pool.message(f"create_thin {dev}")
    expected = {}

    def work(dev):
        rng = random.Random(dev)
        model = bytearray(8 * BS)
        for _ in range(60):
            off = rng.randrange(len(model) - 1)
            data = rng.randbytes(rng.randrange(1, min(BS * 2, len(model) - off)))
            pool.write(dev, off, data)
            model[off : off + len(data)] = data
            if rng.random() < 0.1:
                pool.commit()
        expected[dev] = bytes(model)

    threads = [threading.Thread(target=work, args=(d,)) for d in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for dev in range(4):
        assert pool.read(dev, 0, 8 * BS) == expected[dev]
    close_and_verify(pool, meta)


def test_pool_files_are_usable_by_the_tools_while_closed(tmp_path):
    pool, meta, _ = new_pool(tmp_path)
    pool.message("create_thin 1")
    pool.write(1, 0, b"x")
    close_and_verify(pool, meta)
    r = subprocess.run(
        ["thin_ls", "--no-headers", "-o", "DEV,MAPPED_BLOCKS", str(meta)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.split() == ["1", "1"]


def test_many_devices(tmp_path):
    """Enough devices for multi-level top-level and details trees, then most deleted again
    (nodes merge: thin_check requires every non-root node at least a third full)."""
    pool, meta, _ = new_pool(tmp_path)
    rng = random.Random(3)
    ids = [2 * i for i in rng.sample(range(1 << 23), 700)]  # even; their snapshots odd
    for i in ids:
        pool.message(f"create_thin {i}")
    pool.write(ids[0], 0, b"first")
    for i in ids[:400]:
        pool.message(f"create_snap {i + 1} {ids[0]}")
    pool.commit()
    assert len(pool.devices()) == 1100
    for i in rng.sample(pool.devices(), 1000):
        pool.message(f"delete {i}")
    for i in pool.devices():
        assert pool.read(i, 0, 5) in (b"first", bytes(5))
    close_and_verify(pool, meta)
