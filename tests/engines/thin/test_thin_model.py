"""Random sequences of pool operations against a plain model of every device's bytes; after
every step the touched device reads as the model says, after a reopen all of them do, and every
example ends with thin_check, thin_dump and the data space map agreeing with the engine."""

from __future__ import annotations

import atexit
import errno
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from thinutil import BS, close_and_verify, new_pool, thin_check

from storagekit._native import ThinPool

# Hypothesis keeps caches in ./.hypothesis by default: not in the source tree, and gone after.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="thin-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

BLOCKS = 6
SIZE = BLOCKS * BS
IDS = st.integers(0, 5)
OFFSETS = st.one_of(st.integers(0, SIZE - 1), st.sampled_from([k * BS for k in range(BLOCKS)]))
LENGTHS = st.one_of(st.integers(1, 2 * BS + 7), st.sampled_from([BS, 2 * BS]))


class PoolModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="thin-model-"))
        self.pool, self.meta, self.data = new_pool(self.dir)
        self.model: dict[int, bytearray] = {}
        self.held = False

    def expect_error(self, err: int, fn, *args):
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == err

    def check(self, dev: int) -> None:
        assert self.pool.read(dev, 0, SIZE) == bytes(self.model[dev]), dev

    @rule(dev=IDS)
    def create_thin(self, dev):
        if dev in self.model:
            self.expect_error(errno.EEXIST, self.pool.message, f"create_thin {dev}")
            return
        self.pool.message(f"create_thin {dev}")
        self.model[dev] = bytearray(SIZE)

    @rule(dev=IDS, origin=IDS)
    def create_snap(self, dev, origin):
        msg = f"create_snap {dev} {origin}"
        if dev in self.model:
            self.expect_error(errno.EEXIST, self.pool.message, msg)
        elif origin not in self.model:
            self.expect_error(errno.ENODATA, self.pool.message, msg)
        else:
            self.pool.message(msg)
            self.model[dev] = bytearray(self.model[origin])
            self.check(dev)

    @rule(dev=IDS)
    def delete(self, dev):
        if dev not in self.model:
            self.expect_error(errno.ENODATA, self.pool.message, f"delete {dev}")
            return
        self.pool.message(f"delete {dev}")
        del self.model[dev]

    @rule(dev=IDS, offset=OFFSETS, length=LENGTHS, seed=st.integers(0, 2**32))
    def write(self, dev, offset, length, seed):
        if dev not in self.model:
            return
        data = random.Random(seed).randbytes(min(length, SIZE - offset))
        self.pool.write(dev, offset, data)
        self.model[dev][offset : offset + len(data)] = data
        self.check(dev)

    @rule(dev=IDS, offset=OFFSETS, length=LENGTHS)
    def discard(self, dev, offset, length):
        if dev not in self.model:
            return
        self.pool.discard(dev, offset, length)
        first, end = -(-offset // BS), min((offset + length) // BS, BLOCKS)
        for vb in range(first, end):  # only whole blocks are unmapped
            self.model[dev][vb * BS : (vb + 1) * BS] = bytes(BS)
        self.check(dev)

    @rule(dev=IDS, offset=OFFSETS, length=LENGTHS)
    def read(self, dev, offset, length):
        if dev in self.model:
            got = self.pool.read(dev, offset, length)
            want = bytes(self.model[dev][offset : offset + length])
            assert got == want + bytes(length - len(want))

    @rule()
    def commit(self):
        self.pool.commit()

    @rule()
    def metadata_snap(self):
        self.pool.message("release_metadata_snap" if self.held else "reserve_metadata_snap")
        self.held = not self.held

    @rule()
    def reopen(self):
        self.pool.close()
        thin_check(self.meta)
        self.pool = ThinPool.open(self.meta, self.data, commit_interval=0)
        assert self.pool.devices() == sorted(self.model)
        for dev in self.model:
            self.check(dev)

    @invariant()
    def mapped_blocks_match_the_model(self):
        for dev, content in self.model.items():
            nonzero = {vb for vb in range(BLOCKS) if any(content[vb * BS : (vb + 1) * BS])}
            mapped = {vb for vb, _, _ in self.pool.mappings(dev)}
            assert nonzero <= mapped, dev  # zero blocks may be mapped (zeros were written)
            assert self.pool.device_status(dev)["mapped_blocks"] == len(mapped)

    def teardown(self):
        try:
            close_and_verify(self.pool, self.meta)
            pool = ThinPool.open(self.meta, self.data, read_only=True)
            for dev, content in self.model.items():
                assert pool.read(dev, 0, SIZE) == bytes(content)
            pool.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


PoolModel.TestCase.settings = settings(
    database=None,
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolModel = PoolModel.TestCase
