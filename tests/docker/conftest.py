"""Fixtures of the Docker tests: images docker load takes, the plugin on its own, and a
private dockerd on the plugin — for each of storagekit's drivers."""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import (
    BTRFS_LOOPBACK,
    DRIVER_OPTIONS,
    DRIVERS,
    THIN_POOL_MOUNT,
    Dockerd,
    Plugin,
    force_cleanup,
    loop_devices_under,
    mounts_under,
    processes_mentioning,
    remove_stale_socket,
    require_docker,
)

THIN_POOL_GRACE = 30.0


def settle_thin_pool(driver: str, store: Path, client) -> None:
    """On devicemapper, Cleanup stops the thin pool: no device active, no loop device, no
    engine daemon. The driver does not retry a device that is busy for a moment after its
    unmount (a mount namespace being made or torn down on the host holds a copy of the
    mount), as Docker's deviceset did for up to 20 s, so the pool can stay active. Where it
    does, a warning says so and Cleanup is asked again until the pool goes."""
    if driver != "devicemapper" or not _pool_active(store):
        return
    warnings.warn("devicemapper: Cleanup left the thin pool active (a thin device was busy); "
                  "asking again", stacklevel=2)
    deadline = time.monotonic() + THIN_POOL_GRACE
    while _pool_active(store) and time.monotonic() < deadline:
        time.sleep(1)
        client.cleanup()


def _pool_active(store: Path) -> bool:
    return bool(loop_devices_under(store) or set(mounts_under(store))
                - set(mounts_under(store, but=(THIN_POOL_MOUNT,))))


class DockerOnStorageKit:
    """A running plugin and the dockerd that uses it."""

    def __init__(self, driver: str, home: Path) -> None:
        self.driver, self.home = driver, home
        self.store = home / "store"
        self.plugin = Plugin(self.store, driver, home / "plugin.log")
        # Driver options reach the plugin as dockerd's own --storage-opt (GraphDriver.Init).
        self.dockerd = Dockerd(home / "d", self.plugin.name, DRIVER_OPTIONS.get(driver))

    def start(self) -> None:
        """Start the plugin and dockerd, whichever of them is not running."""
        if self.plugin.proc is None:
            self.plugin.start()
        if self.dockerd.proc is None:
            self.dockerd.start()

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.dockerd.docker(*args, **kw)

    def out(self, *args: str, **kw) -> str:
        return self.dockerd.out(*args, **kw)

    def status(self) -> dict[str, str]:
        return dict(self.plugin.client.status())

    def store_layers(self) -> int:
        return int(self.status()["Store layers"])

    def leftovers(self) -> list[str]:
        """What must not be there once dockerd and the plugin are stopped."""
        found = [f"mount {m}" for m in mounts_under(self.home)]
        found += [f"loop device {d}" for d in loop_devices_under(self.home)]
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.store))]
        if Path(self.plugin.socket).exists():
            found.append(f"socket {self.plugin.socket}")
        return found

    def layer_mounts(self) -> list[str]:
        """Layers' filesystems mounted under the store (a thin pool's own engine and the
        btrfs driver's loopback aside)."""
        return mounts_under(self.store, but=(THIN_POOL_MOUNT, BTRFS_LOOPBACK))

    def stop_dockerd(self) -> None:
        """Stop dockerd (which asks the plugin's Cleanup on its way out)."""
        self.dockerd.stop()
        settle_thin_pool(self.driver, self.store, self.plugin.client)

    def stop(self) -> list[str]:
        """Stop dockerd, then the plugin; what was left behind."""
        if self.dockerd.proc is not None:
            self.stop_dockerd()
        if self.plugin.proc is not None:
            assert self.plugin.stop() == 0, "the plugin did not exit cleanly"
        return self.leftovers()


@pytest.fixture(scope="module", params=DRIVERS)
def docker_env(request, tmp_path_factory) -> Iterator[DockerOnStorageKit]:
    """dockerd on storagekit-<driver>, for every driver; shared by a module's tests."""
    require_docker()
    env = DockerOnStorageKit(request.param, tmp_path_factory.mktemp(f"dk-{request.param}"))
    try:
        env.start()
        yield env
    finally:
        try:
            left = env.stop()
        finally:
            if env.leftovers():
                force_cleanup(env.home)
                remove_stale_socket(env.plugin.socket)
        assert not left, f"left behind: {left}"


@pytest.fixture
def docker(docker_env) -> Iterator[DockerOnStorageKit]:
    """The module's dockerd, emptied after each test: no container, no image, and then no
    layer in the store either."""
    yield docker_env
    docker_env.start()  # a test that stopped them may have failed before it started them
    ids = docker_env.out("ps", "-aq").split()
    if ids:
        docker_env.docker("rm", "-f", *ids)
    docker_env.docker("system", "prune", "-af")
    assert docker_env.store_layers() == 0, "docker system prune -af left layers in the store"


class PluginOnly:
    """The plugin on its own, initialised as dockerd would, spoken to by our own client."""

    def __init__(self, driver: str, home: Path) -> None:
        self.driver, self.home = driver, home
        self.store = home / "store"
        self.plugin = Plugin(self.store, driver, home / "plugin.log")
        self.client = self.plugin.client
        self.opts = DRIVER_OPTIONS.get(driver, [])

    def start(self) -> None:
        self.plugin.start()
        self.client.init(str(self.home / "docker-home"), self.opts)

    def restart(self) -> None:
        assert self.plugin.stop() == 0
        self.plugin.start()  # no Init: as under a dockerd that keeps running

    def leftovers(self) -> list[str]:
        found = [f"mount {m}" for m in mounts_under(self.home)]
        found += [f"loop device {d}" for d in loop_devices_under(self.home)]
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.store))]
        if Path(self.plugin.socket).exists():
            found.append(f"socket {self.plugin.socket}")
        return found


@pytest.fixture(scope="module", params=DRIVERS)
def graph(request, tmp_path_factory) -> Iterator[PluginOnly]:
    """The plugin on storagekit-<driver>, for every driver; shared by a module's tests."""
    env = PluginOnly(request.param, tmp_path_factory.mktemp(f"gd-{request.param}"))
    try:
        env.start()
        yield env
    finally:
        left: list[str] = []
        try:
            if env.plugin.proc is not None:
                env.client.cleanup()  # what dockerd does when it stops
                settle_thin_pool(env.driver, env.store, env.client)
                assert env.plugin.stop() == 0, "the plugin did not exit cleanly"
            left = env.leftovers()
        finally:
            if env.leftovers():
                force_cleanup(env.home)
                remove_stale_socket(env.plugin.socket)
        assert not left, f"left behind: {left}"


@pytest.fixture(scope="module")
def vfs_plugin(tmp_path_factory) -> Iterator[PluginOnly]:
    """The plugin on vfs, for what does not depend on the driver."""
    env = PluginOnly("vfs", tmp_path_factory.mktemp("gd-protocol"))
    try:
        env.start()
        yield env
    finally:
        try:
            if env.plugin.proc is not None:
                assert env.plugin.stop() == 0
        finally:
            left = env.leftovers()
            if left:
                force_cleanup(env.home)
                remove_stale_socket(env.plugin.socket)
        assert not left, f"left behind: {left}"
