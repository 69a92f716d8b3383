"""Several threads on one pool at once, as FUSE's workers are: reads (and in-place writes) do
their data I/O outside the pool's lock, so a block being read or written must not be unmapped,
reused or shared under it.

Each worker owns one device and keeps a model of its bytes: it writes, discards, reads,
snapshots its device (checking the snapshot against the model) and deletes snapshots. Meanwhile
racing readers read every device that exists and check that each block they get is zeros or
a block that was written to that very device at that very place (never another device's
data), and a committer commits. At the end every device reads as its model says, and
thin_check and the data space map agree with the engine."""

from __future__ import annotations

import errno
import random
import threading
import time

import pytest
from thinutil import BS, close_and_verify, new_pool

from storagekit._native import ThinPool

BLOCKS = 16
SIZE = BLOCKS * BS
WORKERS = 3
SECONDS = 4.0
CHUNK = 4096
MAX_SNAPS = 2  # per worker


def tagged(dev: int, vblock: int, gen: int, chunks: int) -> bytes:
    """Data whose every 4 KiB names the device, block and write it came from."""
    return b"".join((dev.to_bytes(4, "little") + vblock.to_bytes(4, "little")
                     + gen.to_bytes(8, "little")) * (CHUNK // 16) for _ in range(chunks))


def check_chunks(data: bytes, devs: set[int], offset: int) -> None:
    """Each 16-byte record is zeros or was written to one of devs (a device or its origin) at
    this block. (A read racing an in-place write of the same bytes may see parts of both
    writes, as on any block device: records, not chunks.)"""
    zero = bytes(16)
    for i in range(0, len(data), CHUNK):
        chunk = data[i : i + CHUNK]
        if not any(chunk):
            continue
        for j in range(0, CHUNK, 16):
            rec = chunk[j : j + 16]
            if rec == zero:
                continue
            dev = int.from_bytes(rec[0:4], "little")
            vb = int.from_bytes(rec[4:8], "little")
            assert dev in devs and vb == (offset + i) // BS, (
                f"block of device {dev} vblock {vb} read at {offset + i + j} of {devs}")


def test_parallel_io_discards_snapshots_and_deletes(tmp_path, monkeypatch):
    # Pause pinned I/O after its lookup: a block freed and reused meanwhile would show.
    monkeypatch.setenv("STORAGEKIT_THIN_TEST_IO_DELAY_US", "2000")
    # Small, so that freed blocks are soon reused: 3 workers * 16 blocks * (1 + 2 snapshots)
    # fit in 160 blocks.
    pool, meta, _ = new_pool(tmp_path, data_mib=10)
    for w in range(WORKERS):
        pool.message(f"create_thin {w}")
    stop = threading.Event()
    errors: list[BaseException] = []
    # snapshot id -> its origin worker; readers read whatever exists
    live: dict[int, int] = {w: w for w in range(WORKERS)}
    live_lock = threading.Lock()
    counts = {"reads": 0, "writes": 0, "discards": 0, "snaps": 0, "deletes": 0, "commits": 0}

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
                stop.set()
        return run

    def worker(w: int) -> None:
        rng = random.Random(w)
        model = bytearray(SIZE)
        gen = 0
        snaps: dict[int, bytes] = {}
        next_snap = 100 + w * 1000
        while not stop.is_set():
            op = rng.random()
            if op < 0.4:
                first = rng.randrange(BLOCKS)
                n = rng.randrange(1, min(4, BLOCKS - first) + 1)
                gen += 1
                data = b"".join(tagged(w, first + k, gen, BS // CHUNK) for k in range(n))
                # sometimes only part of the first block: the rest keeps what it had
                skip = rng.choice([0, 0, CHUNK, 3 * CHUNK])
                pool.write(w, first * BS + skip, data[skip:])
                model[first * BS + skip : (first + n) * BS] = data[skip:]
                counts["writes"] += 1
            elif op < 0.55:
                first = rng.randrange(BLOCKS)
                n = rng.randrange(1, min(3, BLOCKS - first) + 1)
                pool.discard(w, first * BS, n * BS)
                model[first * BS : (first + n) * BS] = bytes(n * BS)
                counts["discards"] += 1
            elif op < 0.8:
                off = rng.randrange(0, SIZE, CHUNK)
                n = rng.randrange(CHUNK, min(SIZE - off, 4 * BS) + 1, CHUNK)
                assert pool.read(w, off, n) == bytes(model[off : off + n])
                counts["reads"] += 1
            elif op < 0.9 and len(snaps) < MAX_SNAPS:
                sid = next_snap
                next_snap += 1
                pool.message(f"create_snap {sid} {w}")
                snaps[sid] = bytes(model)
                with live_lock:
                    live[sid] = w
                counts["snaps"] += 1
            elif snaps:
                sid = rng.choice(sorted(snaps))
                assert pool.read(sid, 0, SIZE) == snaps[sid], f"snapshot {sid}"
                with live_lock:
                    del live[sid]
                pool.message(f"delete {sid}")
                del snaps[sid]
                counts["deletes"] += 1
        assert pool.read(w, 0, SIZE) == bytes(model)
        for sid, content in snaps.items():
            assert pool.read(sid, 0, SIZE) == content, f"snapshot {sid}"

    def racing_reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            with live_lock:
                dev, origin = rng.choice(sorted(live.items()))
            off = rng.randrange(0, SIZE, CHUNK)
            n = rng.randrange(CHUNK, min(SIZE - off, 8 * BS) + 1, CHUNK)
            try:
                data = pool.read(dev, off, n)
            except OSError as e:
                assert e.errno == errno.ENODATA  # deleted meanwhile
                continue
            check_chunks(data, {origin}, off)
            counts["reads"] += 1

    def committer() -> None:
        while not stop.wait(0.002):
            pool.commit()
            counts["commits"] += 1

    threads = [threading.Thread(target=guarded(lambda w=w: worker(w))) for w in range(WORKERS)]
    threads += [threading.Thread(target=guarded(lambda s=s: racing_reader(s))) for s in range(2)]
    threads.append(threading.Thread(target=guarded(committer)))
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    if errors:
        raise errors[0]
    assert all(counts[k] > 0 for k in counts), counts
    close_and_verify(pool, meta)


@pytest.mark.parametrize("free", ["discard", "delete"])
def test_a_block_being_read_is_not_reused_under_the_reader(tmp_path, monkeypatch, free):
    """A pool of one block: device 1's block is unmapped (and the pool committed) while a read
    of it is in flight, then device 2 writes the only block there is. The read must give
    device 1's data (or zeros), never device 2's: freeing waits for the read."""
    monkeypatch.setenv("STORAGEKIT_THIN_TEST_IO_DELAY_US", "300000")
    meta = tmp_path / "meta"
    pool = ThinPool.create(meta, tmp_path / "data", metadata_size=4 << 20, data_size=BS,
                           commit_interval=0)
    pool.message("create_thin 1")
    pool.message("create_thin 2")
    pool.write(1, 0, b"1" * BS)  # maps the pool's only block (written under the lock)
    pool.commit()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pool.read(1, 0, BS)))
    reader.start()
    time.sleep(0.1)  # the reader has its block and is paused before reading it
    start = time.monotonic()
    if free == "discard":
        pool.discard(1, 0, BS)
    else:
        pool.message("delete 1")
    waited = time.monotonic() - start
    pool.commit()
    pool.write(2, 0, b"2" * BS)  # the only block again
    reader.join(10)
    assert got and got[0] in (b"1" * BS, bytes(BS)), got[0][:8]
    assert waited > 0.1  # the free waited for the read in flight
    assert pool.read(2, 0, BS) == b"2" * BS
    close_and_verify(pool, meta)
