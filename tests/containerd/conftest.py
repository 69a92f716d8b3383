"""Fixtures of the containerd tests: storagekit's snapshotter server on each driver this host
supports, on its own and under a private containerd that loads it as a proxy plugin."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerd_util import Containerd, SnapshotterServer, require_containerd
from hostutil import (
    force_cleanup,
    loop_devices_under,
    mounts_under,
    processes_mentioning,
    remove_stale_socket,
)

from storagekit import registry
from storagekit.snapshotter.command import SERVED_DRIVERS

# the drivers the snapshotter serves (btrfs not yet: see its SERVED_DRIVERS)
DRIVERS = sorted(set(registry.available()) & set(SERVED_DRIVERS))
# The thin engine's own mount (its pool's devices as files), there while a device is active.
THIN_POOL_MOUNT = "fuse.storagekit-thin"


class Snapshotter:
    """The snapshotter server on one driver, its store and socket under `home`."""

    def __init__(self, driver: str, home: Path) -> None:
        self.driver, self.home = driver, home
        self.name = f"storagekit-{driver}"
        self.store = home / "store"
        self.socket = str(home / "snapshotter.sock")
        self.server = SnapshotterServer(self.store, driver, self.socket,
                                        home / "snapshotter.log")

    def start(self) -> None:
        if self.server.proc is None:
            self.server.start()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.server.stop(sig)

    def restart(self) -> None:
        assert self.stop() == 0, "the snapshotter did not exit cleanly on SIGTERM"
        self.start()

    def layers(self) -> list[dict]:
        """The store's layers, as `storagekit layer ls --json` lists them."""
        return json.loads(self.server.storagekit("--json", "layer", "ls").stdout)

    def settled_layers(self, count: int, timeout: float = 30) -> list[dict]:
        """The store's layers once there are `count` of them (or after timeout): containerd
        removes a snapshot from its own database at once, and from the snapshotter in its
        garbage collection, which a deletion schedules to run right after."""
        deadline = time.monotonic() + timeout
        while len(layers := self.layers()) != count and time.monotonic() < deadline:
            time.sleep(0.1)
        return layers

    def layer_labels(self, key: str) -> dict[str, str]:
        """The labels the store keeps with the layer of containerd's snapshot `key`.
        containerd gives its snapshotters keys of their own (<namespace>/<n>/<key>), which the
        server keeps as the layer's name (containerd:<header namespace>/<that key>)."""
        found = [layer for layer in self.layers()
                 if (layer["name"] or "").startswith("containerd:")
                 and layer["name"].endswith(f"/{key}")]
        assert len(found) == 1, f"{len(found)} layers for snapshot {key!r}"
        return found[0]["labels"]

    def layer_mounts(self) -> list[str]:
        """Layers' filesystems mounted under the store (a thin pool's own engine aside)."""
        return mounts_under(self.store, but=(THIN_POOL_MOUNT,))

    def leftovers(self) -> list[str]:
        """What must not be there once the server (and whoever used it) stopped."""
        found = [f"mount {m}" for m in mounts_under(self.home)]
        found += [f"loop device {d}" for d in loop_devices_under(self.home)]
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.home))]
        if Path(self.socket).exists():
            found.append(f"socket {self.socket}")
        return found


class ContainerdOnStorageKit(Snapshotter):
    """The snapshotter server and a private containerd with it as proxy plugin
    `storagekit-<driver>`."""

    def __init__(self, driver: str, home: Path) -> None:
        super().__init__(driver, home)
        self.containerd = Containerd(home / "containerd", {self.name: self.socket})
        self.redial_until = 0.0

    # containerd redials a proxy plugin with a backoff of up to 3 s (services/server) and
    # fails the calls made in between as Unavailable: for that long after a new server has
    # started under a running containerd, a call that failed so is made again.
    REDIAL = 15.0

    def start(self) -> None:
        if self.server.proc is None:
            super().start()
            self.redial_until = time.monotonic() + self.REDIAL
        if self.containerd.proc is None:
            self.containerd.start()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.redial_until = 0.0
        return super().stop(sig)

    def ctr(self, *args: str, check: bool = True, **kw):
        while True:
            proc = self.containerd.ctr(*args, check=False, **kw)
            if proc.returncode == 0 or "unavailable" not in proc.stderr or \
                    time.monotonic() > self.redial_until:
                break
            time.sleep(0.5)
        if check and proc.returncode != 0:
            self.containerd.ctr(*args, **kw)  # again, to fail with containerd's log
        return proc

    def out(self, *args: str, **kw) -> str:
        return self.ctr(*args, **kw).stdout

    def settled_layers(self, count: int, timeout: float = 30) -> list[dict]:
        """As Snapshotter's, with a collection forced when the one a deletion schedules has
        not come: containerd's scheduler drops a deletion's event that lands while a
        collection is finishing (it counts as seen by that one), so a snapshot removed then
        waits for the next deletion's collection, although the next collection of any kind
        would take it. Deleting a lease with --sync runs one."""
        deadline = time.monotonic() + timeout
        while len(layers := super().settled_layers(count, timeout=3)) != count and \
                time.monotonic() < deadline:
            lease = self.out("leases", "create").split()[0]
            self.ctr("leases", "rm", "--sync", lease)
        if len(layers) != count:  # say why: containerd logs the removals that failed
            print("containerd's errors:\n" + "\n".join(
                line for line in self.containerd.log.read_text(errors="replace").splitlines()
                if "level=error" in line or "level=warning" in line)[-5000:])
        return layers

    def reconnected(self) -> None:
        """Wait until containerd reaches the server again: `ctr snapshots usage` asks the
        snapshotter about every snapshot containerd knows (with none, there is nothing for a
        garbage collection to ask it either)."""
        self.snapshots("usage")

    def snapshots(self, *args: str, **kw):
        """`ctr snapshots --snapshotter storagekit-<driver> ARGS`."""
        return self.ctr("snapshots", "--snapshotter", self.name, *args, **kw)

    def stop_all(self) -> list[str]:
        """Stop containerd (and its shims), then the server; what was left behind."""
        if self.containerd.proc is not None:
            assert self.containerd.stop() == 0, "containerd did not exit cleanly"
        if self.server.proc is not None:
            assert self.stop() == 0, "the snapshotter did not exit cleanly on SIGTERM"
        return self.leftovers()


def _finish(env: Snapshotter, stop) -> None:
    left: list[str] = []
    try:
        left = stop()
    finally:
        if env.leftovers():
            force_cleanup(env.home)
            remove_stale_socket(env.socket)
    assert not left, f"left behind: {left}"


@pytest.fixture(scope="module", params=DRIVERS)
def snapshotter(request, tmp_path_factory) -> Iterator[Snapshotter]:
    """The snapshotter server on its own, for every driver; shared by a module's tests."""
    env = Snapshotter(request.param, tmp_path_factory.mktemp(f"sn-{request.param}"))

    def stop() -> list[str]:
        if env.server.proc is not None:
            assert env.stop() == 0, "the snapshotter did not exit cleanly on SIGTERM"
        return env.leftovers()

    try:
        env.start()
        yield env
    finally:
        _finish(env, stop)


@pytest.fixture(scope="module", params=DRIVERS)
def ctrd_env(request, tmp_path_factory) -> Iterator[ContainerdOnStorageKit]:
    """containerd on storagekit-<driver>, for every driver; shared by a module's tests."""
    require_containerd()
    env = ContainerdOnStorageKit(request.param, tmp_path_factory.mktemp(f"cd-{request.param}"))
    try:
        env.start()
        yield env
    finally:
        _finish(env, env.stop_all)


@pytest.fixture
def ctrd(ctrd_env) -> Iterator[ContainerdOnStorageKit]:
    """The module's containerd, emptied after each test: no container, no image, and after
    containerd's garbage collection no snapshot, so no layer in the store either."""
    yield ctrd_env
    ctrd_env.start()  # a test that stopped one of them may have failed before restarting it
    # containerd's collection below must reach the server: its removals are not retried
    ctrd_env.reconnected()
    ids = ctrd_env.out("containers", "ls", "-q").split()
    for cid in ids:
        ctrd_env.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        ctrd_env.ctr("tasks", "rm", "-f", cid, check=False)
    if ids:
        ctrd_env.ctr("containers", "rm", *ids)
    images = ctrd_env.out("images", "ls", "-q").split()
    if images:
        ctrd_env.ctr("images", "rm", "--sync", *images)
    left = ctrd_env.snapshots("ls").stdout.splitlines()[1:]
    assert not left, f"snapshots left after the images went: {left}"
    assert ctrd_env.settled_layers(0) == [], "containerd's garbage collection left layers"
