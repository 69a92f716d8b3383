"""The drivers side by side on the claims `storagekit bench` measures, as pytest-benchmark
cases: the same workloads (storagekit/bench/workloads.py), the same contenders (the four
drivers, the host filesystem, kernel overlay, fuse-overlayfs), the same data sets, so a
figure here and in a bench report come from one implementation.

One case per workload and contender, group = the workload. The time pytest-benchmark shows is
the whole workload's (setup included); the figures are in extra_info, "METRIC[PARAM]" -> the
rounds' values (seconds, bytes, MiB/s), with the host filesystem's case marked baseline:
bench/report.py prints them beside the host's. Sizes follow STORAGEKIT_BENCH_SCALE like every
suite here; STORAGEKIT_BENCH_ROUNDS sets the rounds (default 3).

    python3 -m pytest bench/test_claims.py --benchmark-only --benchmark-json=claims.json
    python3 bench/report.py claims.json
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from conftest import BIG_FILE_BYTES, SCALE, SMALL_FILES

from storagekit import registry
from storagekit.bench import contenders as cmod
from storagekit.bench.scale import SCALES, DataSets
from storagekit.bench.setupinfo import reflink_supported
from storagekit.bench.workloads import WORKLOADS, Context, prepare

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "3"))
WHO = [*sorted(registry.available()), *cmod.BASELINES]
_quick = SCALES["quick"]
BENCH_SCALE = dataclasses.replace(
    _quick, name=f"pytest-benchmark x{SCALE}", rounds=ROUNDS, small_files=SMALL_FILES,
    big_bytes=BIG_FILE_BYTES, read_bytes=max(1 << 20, int((100 << 20) * SCALE)),
    io_bytes=max(1 << 20, int((256 << 20) * SCALE)), storm_files=SMALL_FILES)


@pytest.fixture(scope="module")
def ctx(bench_dir: Path) -> Context:
    data = DataSets(bench_dir / "claims-data", BENCH_SCALE)
    return Context(bench_dir, BENCH_SCALE, data, reflink=reflink_supported(bench_dir))


@pytest.fixture(scope="module")
def contenders(ctx: Context, bench_dir: Path):
    made: dict[str, cmod.Contender] = {}
    missing = cmod.available_baselines()

    def get(name: str) -> cmod.Contender:
        if name not in made:
            if name in missing and missing[name]:
                pytest.skip(f"{name}: {missing[name]}")
            if name not in missing:
                ok, why = registry.driver_class(name).probe(bench_dir)
                if not ok:
                    pytest.skip(f"{name}: {why}")
            c = cmod.make(name, bench_dir / f"claims-{name.replace(' ', '-')}")
            made[name] = c
            prepare(ctx, c)
        return made[name]

    yield get
    for c in made.values():
        c.close()


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_claim(benchmark, ctx, contenders, workload, who):
    c = contenders(who)
    if not workload.applies(c):
        pytest.skip(f"{workload.name} does not apply to {who}")
    benchmark.group = workload.title
    benchmark.extra_info["baseline"] = who == cmod.HOST
    first = len(ctx.samples)
    failures = len(ctx.failures)

    def once() -> None:
        workload.run(ctx, c)
        ctx.round += 1

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    assert len(ctx.failures) == failures, ctx.failures[failures:]
    for s in ctx.samples[first:]:
        key = f"{s.metric}[{s.param}]" if s.param else s.metric
        benchmark.extra_info.setdefault(key, []).append(s.value)
