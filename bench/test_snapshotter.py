"""The cost of the snapshotter's gRPC hop: Prepare + Commit + Remove of a snapshot through
the server (a `storagekit snapshotter serve` process, our client over its unix socket) against
the same three operations of the same SnapshotService called in this process on a store of
its own (the baseline), same run, for each driver. Rounds are interleaved: before each timed
round of one contender the other does the same once (untimed, in pytest-benchmark's setup).

Group "snapshot prepare+commit+remove <driver>": baseline/entry is what the hop costs (1.0:
nothing). containerd's own comparison (against its overlayfs and native snapshotters) is in
bench/test_containerd.py.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "snapshotter"))

from serverutil import DRIVER_OPTIONS, Server, stop_and_check  # noqa: E402

from storagekit import registry  # noqa: E402
from storagekit.cli.command import key_values  # noqa: E402
from storagekit.snapshotter.command import SERVED_DRIVERS
from storagekit.snapshotter.service import SnapshotService  # noqa: E402
from storagekit.store import Store  # noqa: E402

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "30"))
# the drivers the snapshotter serves (btrfs not yet: see its SERVED_DRIVERS)
DRIVERS = sorted(set(registry.available()) & set(SERVED_DRIVERS))
NAMESPACE = "bench"
_count = itertools.count()


class InProcess:
    """The baseline: the service on a store of its own, no gRPC, no second process."""

    def __init__(self, driver: str, home: Path) -> None:
        options = key_values(DRIVER_OPTIONS.get(driver, []), "a driver option")
        self.service = SnapshotService(Store(home / "store", driver, options))

    def prepare(self, key: str, parent: str = "") -> None:
        self.service.prepare(NAMESPACE, key, parent, {})

    def commit(self, name: str, key: str) -> None:
        self.service.commit(NAMESPACE, name, key, {})

    def remove(self, key: str) -> None:
        self.service.remove(NAMESPACE, key)


def _cycle(c) -> None:
    n = next(_count)
    c.prepare(f"extract-{n} sha256:x", "base")
    c.commit(f"sha256:{n}", f"extract-{n} sha256:x")
    c.remove(f"sha256:{n}")


@pytest.fixture(scope="module", params=DRIVERS)
def contenders(request, bench_dir: Path):
    driver = request.param
    server = Server(driver, bench_dir / f"snap-{driver}")
    server.home.mkdir()
    local = None
    client = None
    try:
        server.start()
        client = server.client(NAMESPACE)
        local = InProcess(driver, bench_dir / f"local-{driver}")
        for c in (client, local):
            c.prepare("k")
            c.commit("base", "k")
            _cycle(c)  # warm
        yield driver, {"in-process": local, "grpc": client}
    finally:
        if client is not None:
            client.close()
        if local is not None:
            local.service.store.driver.cleanup()
            local.service.close()
        stop_and_check(server)


@pytest.mark.parametrize("name", ["in-process", "grpc"])
def test_prepare_commit_remove(benchmark, contenders, name):
    driver, by_name = contenders
    benchmark.group = f"snapshot prepare+commit+remove {driver}"
    benchmark.extra_info["baseline"] = name == "in-process"
    me, other = by_name[name], by_name["grpc" if name == "in-process" else "in-process"]
    benchmark.pedantic(lambda: _cycle(me), setup=lambda: _cycle(other), rounds=ROUNDS,
                       iterations=1)
