"""Crash consistency of a pool served by its daemon: writes, fsyncs and discards through the
loop devices and pool messages through the control socket, the daemon killed with SIGKILL at a
random moment, many times over. After each kill thin_check passes, the data space map agrees
with the mappings, and the pool reopens as it was last committed: every message that returned
and every write followed by a returned fsync (or message: messages commit) is there; what was
in flight, or written since the last commit, is either there or not, block by block.

A message sent as the daemon is killed may find it gone: the client then runs the message on
the pool itself, as the daemon last committed it. The message is committed, but the writes the
daemon had not committed died with it, so such a message vouches for its own effect only."""

from __future__ import annotations

import fcntl
import mmap
import os
import random
import signal
import struct
import threading
import time

import pytest
from pooldaemon import fresh_pool, process_gone
from thinmeta import check_data_space_map

from storagekit._native import ThinPool
from storagekit.engines import thin
from storagekit.engines.thin import ThinError
from storagekit.engines.thin import client as thin_client

BS = 64 << 10
CHUNK = 4096  # a write cut short by the kill stops at a page boundary
CHUNKS = BS // CHUNK
NV = 32  # blocks per device
SIZE = NV * BS
IDS = range(1, 7)
KILLS = 12
BLKDISCARD = 0x1277
ZERO = (0,) * CHUNKS

Content = tuple[int, ...]  # the seed of each 4 KiB chunk of a block; 0 is zeros


def block_bytes(seed: int) -> bytes:
    return struct.pack("<Q", seed) * (BS // 8)


def chunks_of(data: bytes, where: str) -> Content:
    out = []
    for i in range(CHUNKS):
        piece = data[i * CHUNK : (i + 1) * CHUNK]
        seed = struct.unpack_from("<Q", piece)[0]
        assert piece == struct.pack("<Q", seed) * (CHUNK // 8), f"{where}: chunk {i} is torn"
        out.append(seed)
    return tuple(out)


class Model:
    """What the pool must hold: `committed` is known to be on disk; `latest` is what the
    operations that returned made of it; `maybe` are the seeds (0: a discard) that may have
    reached a block since the last commit."""

    def __init__(self) -> None:
        self.committed: dict[int, dict[int, Content]] = {}
        self.latest: dict[int, dict[int, Content]] = {}
        self.maybe: dict[tuple[int, int], set[int]] = {}
        self.tid = 0

    def commit(self) -> None:
        self.committed = {d: dict(m) for d, m in self.latest.items()}
        self.maybe.clear()

    def apply(self, verb: str, args: tuple[int, ...]) -> None:
        """A message that took effect (and was committed with everything before it)."""
        _message_effect(self.latest, verb, args)
        if verb == "set_transaction_id":
            self.tid = args[1]
        self.commit()

    def apply_alone(self, verb: str, args: tuple[int, ...]) -> None:
        """A message the client ran itself, the daemon being dead: committed on the pool as the
        daemon last committed it. What was written since is there (an overwrite in place of a
        block that commit maps) or not, block by block; a snapshot's blocks likewise."""
        _message_effect(self.latest, verb, args)
        _message_effect(self.committed, verb, args)
        if verb in ("create_thin", "create_snap", "delete"):
            for key in [k for k in self.maybe if k[0] == args[0]]:
                del self.maybe[key]
        if verb == "create_snap":
            for (dev, vb), seeds in list(self.maybe.items()):
                if dev == args[1]:
                    self.maybe[(args[0], vb)] = set(seeds)
        elif verb == "set_transaction_id":
            self.tid = args[1]

    def wrote(self, dev: int, vb: int, seed: int, done: bool) -> None:
        self.maybe.setdefault((dev, vb), set()).add(seed)
        if done:
            self.latest[dev][vb] = (seed,) * CHUNKS

    def discarded(self, dev: int, vb: int, n: int, done: bool) -> None:
        for v in range(vb, vb + n):
            self.maybe.setdefault((dev, v), set()).add(0)
            if done:
                self.latest[dev].pop(v, None)


def _message_effect(devs: dict[int, dict[int, Content]], verb: str,
                    args: tuple[int, ...]) -> None:
    if verb == "create_thin":
        devs[args[0]] = {}
    elif verb == "create_snap":
        devs[args[0]] = dict(devs[args[1]])
    elif verb == "delete":
        del devs[args[0]]


def devices_after(model: Model, pending: tuple[str, tuple[int, ...]] | None) -> set[int]:
    devs = set(model.committed)
    if pending is not None:
        verb, args = pending
        if verb in ("create_thin", "create_snap"):
            devs.add(args[0])
        elif verb == "delete":
            devs.discard(args[0])
    return devs


def verify(d, model: Model, pending: tuple[str, tuple[int, ...]] | None) -> None:
    """Check the reopened pool against the model, then make the model what was found."""
    with ThinPool.open(d / "metadata", d / "data", read_only=True) as pool:
        found = set(pool.devices())
        tid = pool.status()["transaction_id"]
        if pending is not None:
            after = devices_after(model, pending)
            applied = (found == after and after != set(model.committed)) or (
                pending[0] == "set_transaction_id" and tid == pending[1][1]
            )
            if applied:
                model.apply(*pending)
        assert found == set(model.committed), (found, sorted(model.committed), pending)
        assert tid == model.tid, (tid, model.tid, pending)
        state: dict[int, dict[int, Content]] = {}
        for dev in sorted(found):
            state[dev] = {}
            data = pool.read(dev, 0, SIZE)
            for vb in range(NV):
                got = chunks_of(data[vb * BS : (vb + 1) * BS], f"device {dev} block {vb}")
                want = model.committed[dev].get(vb, ZERO)
                extra = model.maybe.get((dev, vb))
                if extra:
                    for i, seed in enumerate(got):
                        assert seed == want[i] or seed in extra, (dev, vb, i, seed, want, extra)
                else:
                    assert got == want, (dev, vb, got, want)
                if got != ZERO:
                    state[dev][vb] = got
            assert pool.device_status(dev)["mapped_blocks"] >= len(state[dev])
        assert not pool.status()["needs_check"]
    model.latest = state
    model.commit()


class Driver:
    """Random operations on the active devices and the pool until the daemon is killed."""

    def __init__(
        self, d, model: Model, loops: dict[int, str], rng: random.Random, seed_base: int,
        killed: threading.Event, without_daemon: list[int],
    ) -> None:
        self.d, self.model, self.rng, self.killed = d, model, rng, killed
        self.without_daemon = without_daemon  # [calls that opened the pool in this process]
        self.fds = {dev: os.open(loop, os.O_RDWR | os.O_DIRECT) for dev, loop in loops.items()}
        self.buf = mmap.mmap(-1, BS)
        self.seed = seed_base
        self.ops = 0
        self.pending: tuple[str, tuple[int, ...]] | None = None

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.buf.close()

    def message(self, verb: str, *args: int) -> None:
        self.pending = (verb, args)
        before = self.without_daemon[0]
        thin.message(self.d, " ".join([verb, *map(str, args)]))
        self.pending = None
        if self.without_daemon[0] != before:
            # The daemon was gone: the client ran the message on the pool as last committed,
            # without the daemon's uncommitted writes.
            assert self.killed.is_set(), "the daemon was gone before the kill"
            self.model.apply_alone(verb, args)
        else:
            self.model.apply(verb, args)

    def step(self) -> None:
        rng, model = self.rng, self.model
        free = [i for i in IDS if i not in model.latest]
        inactive = [i for i in model.latest if i not in self.fds]
        op = rng.random()
        self.ops += 1
        if op < 0.05 and free:
            self.message("create_thin", rng.choice(free))
        elif op < 0.12 and free:
            self.message("create_snap", rng.choice(free), rng.choice(sorted(model.latest)))
        elif op < 0.16 and inactive:
            self.message("delete", rng.choice(inactive))
        elif op < 0.21:
            self.message("set_transaction_id", model.tid, model.tid + 1)
        elif op < 0.27:
            os.fsync(self.fds[rng.choice(sorted(self.fds))])  # a FLUSH: the pool commits
            model.commit()
        elif op < 0.33:
            dev, vb = rng.choice(sorted(self.fds)), rng.randrange(NV - 1)
            n = rng.randint(1, 2)
            model.discarded(dev, vb, n, done=False)
            fcntl.ioctl(self.fds[dev], BLKDISCARD, struct.pack("QQ", vb * BS, n * BS))
            model.discarded(dev, vb, n, done=True)
        else:
            dev, vb = rng.choice(sorted(self.fds)), rng.randrange(NV)
            self.seed += 1
            self.buf[:] = block_bytes(self.seed)
            model.wrote(dev, vb, self.seed, done=False)
            assert os.pwrite(self.fds[dev], self.buf, vb * BS) == BS
            model.wrote(dev, vb, self.seed, done=True)


@pytest.fixture
def pool_dir(tmp_path):
    yield from fresh_pool(tmp_path)


def test_message_after_the_kill_commits_the_pool_as_last_committed(pool_dir):
    """A message that finds the daemon killed is run by the client on the pool as the daemon
    last committed it: the message is committed, the daemon's uncommitted writes are not, and
    the model's apply_alone allows for that."""
    d = pool_dir
    model = Model()
    thin.message(d, "create_thin 1")
    model.apply("create_thin", (1,))
    fd = os.open(thin.activate(d, 1, SIZE), os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, BS)
    try:
        for seed in (1, 2):
            buf[:] = block_bytes(seed)
            model.wrote(1, 5, seed, done=False)
            assert os.pwrite(fd, buf, 5 * BS) == BS
            model.wrote(1, 5, seed, done=True)
            if seed == 1:  # committed, and block 5 shared: the next write goes to a new block
                thin.message(d, "create_snap 2 1")
                model.apply("create_snap", (2, 1))
        pid = thin.daemon_pid(d)
        assert pid
        os.kill(pid, signal.SIGKILL)
        assert process_gone(pid)
        thin.message(d, "set_transaction_id 0 1")
        model.apply_alone("set_transaction_id", (0, 1))
        assert thin.daemon_pid(d) is None
    finally:
        os.close(fd)
        buf.close()
    assert "examining" in thin.check(d)
    with ThinPool.open(d / "metadata", d / "data", read_only=True) as pool:
        assert pool.status()["transaction_id"] == 1
        assert chunks_of(pool.read(1, 5 * BS, BS), "device 1 block 5") == (1,) * CHUNKS
    verify(d, model, None)


def test_daemon_killed_at_random_moments(pool_dir, monkeypatch):
    d = pool_dir
    without_daemon = [0]
    with_pool = thin_client._with_pool

    def counted(*args, **kwargs):
        without_daemon[0] += 1
        return with_pool(*args, **kwargs)

    monkeypatch.setattr(thin_client, "_with_pool", counted)
    # A new sequence each run (THIN_CRASH_SEED repeats one); the seed is shown on failure.
    seed = int(os.environ.get("THIN_CRASH_SEED") or random.randrange(1 << 32))
    print(f"THIN_CRASH_SEED={seed}")
    rng = random.Random(seed)
    model = Model()
    thin.message(d, "create_thin 1")
    model.apply("create_thin", (1,))
    failures: set[str] = set()
    for kill in range(KILLS):
        chosen = rng.sample(sorted(model.latest), min(2, len(model.latest)))
        loops = {dev: thin.activate(d, dev, SIZE) for dev in chosen}
        pid = thin.daemon_pid(d)
        assert pid
        killed = threading.Event()
        driver = Driver(d, model, loops, rng, (kill + 1) * 1_000_000, killed, without_daemon)
        delay = rng.uniform(0.02, 0.6)

        def killer(pid=pid, delay=delay, killed=killed):
            time.sleep(delay)
            killed.set()
            os.kill(pid, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        try:
            while not killed.is_set():
                driver.step()
        except (OSError, ThinError) as e:
            # Only the kill may stop the operations (a write then fails with EIO, a message
            # with "hung up").
            t.join()
            assert killed.is_set(), f"failed before the kill: {e!r}"
            failures.add(type(e).__name__)
        finally:
            t.join()
            driver.close()
        assert driver.ops > 0
        assert process_gone(pid)
        # thin.check removes the dead mount and loop devices first, then runs thin_check.
        assert "examining" in thin.check(d)
        check_data_space_map(d / "metadata")
        verify(d, model, driver.pending)
        assert thin.daemon_pid(d) is None
    assert failures, "no operation was ever cut short by a kill"
    # The pool still works: one more round that ends normally.
    dev = sorted(model.latest)[0]
    loop = thin.activate(d, dev, SIZE)
    with open(loop, "r+b", buffering=0) as f:
        f.write(b"after the crashes")
        os.fsync(f.fileno())
    thin.deactivate(d, dev)
    thin.check(d)
    with ThinPool.open(d / "metadata", d / "data", read_only=True) as pool:
        assert pool.read(dev, 0, 17) == b"after the crashes"
        assert pool.status()["transaction_id"] == model.tid
