"""Crash consistency: a child process changes a pool and is killed with SIGKILL at random
moments; each time the metadata passes thin_check and reopens as exactly the last committed
transaction (device list and mappings), with every block holding either its committed data or
data the child was writing in place after that commit."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from thin_crash_child import BS, pattern, read_state
from thinmeta import check_data_space_map
from thinutil import new_pool, thin_check

import storagekit
from storagekit._native import ThinPool

CHILD = Path(__file__).with_name("thin_crash_child.py")
KILLS = 24


def run_child(meta: Path, data: Path, seed: int, rng: random.Random) -> list[str]:
    env = dict(os.environ)
    root = str(Path(storagekit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(meta), str(data), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    lines: list[str] = []
    started = threading.Event()

    def reader():
        for raw in proc.stdout:
            lines.append(raw.decode().rstrip("\n"))
            started.set()

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert started.wait(60), "the child did not start: " + proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.25))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t.join()
        err = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the child died by itself:\n{err}"
    return lines


def expected_after_crash(lines: list[str], tid_on_disk: int):
    """The state committed as tid_on_disk, and the in-place writes that may have reached the
    data device after it (dev, vblock) -> {seeds}."""
    states, confirmed, announced = {}, None, None
    for i, line in enumerate(lines):
        kind, rest = line.split(" ", 1)
        if kind in "SC":
            tid, state = rest.split(" ", 1)
            states[int(tid)] = (
                i,
                {int(d): {int(v): s for v, s in m.items()} for d, m in json.loads(state).items()},
            )
            announced = int(tid)
            if kind == "S":
                confirmed = int(tid)
        elif kind == "D":
            confirmed = int(rest)
    assert confirmed is not None and confirmed <= tid_on_disk <= announced, (
        confirmed,
        tid_on_disk,
        announced,
    )
    start, state = states[tid_on_disk]
    pending: dict[tuple[int, int], set[int]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("W "):
            dev, vb, seed = map(int, line.split()[1:])
            pending.setdefault((dev, vb), set()).add(seed)
    return state, pending


def test_killed_at_random_moments(tmp_path):
    pool, meta, data = new_pool(tmp_path, meta_mib=8, data_mib=64)
    pool.close()
    rng = random.Random(20240611)
    outcomes = set()
    for kill in range(KILLS):
        lines = run_child(meta, data, kill + 1, rng)
        thin_check(meta)
        check_data_space_map(meta)
        pool = ThinPool.open(meta, data, commit_interval=0)
        tid = pool.status()["transaction_id"]
        state, pending = expected_after_crash(lines, tid)
        outcomes.add(
            "committed"
            if any(ln == f"D {tid}" for ln in lines)
            else "in flight"
            if tid != int(lines[0].split()[1])
            else "unchanged"
        )
        assert pool.devices() == sorted(state)
        found = read_state(pool)
        for dev, maps in state.items():
            assert sorted(found[dev]) == sorted(maps), dev
            for vb, seed in maps.items():
                allowed = {seed} | pending.get((dev, vb), set())
                got = found[dev][vb]
                assert got in allowed, (dev, vb, got, allowed)
                assert pool.read(dev, vb * BS, BS) == pattern(got), (dev, vb)
        assert not pool.status()["transaction_open"]
        pool.close()
    assert "committed" in outcomes, outcomes
    final = struct.unpack("<Q", meta.read_bytes()[48:56])[0]
    assert final > 0  # transactions were committed across the kills
