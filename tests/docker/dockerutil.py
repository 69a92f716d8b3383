"""The storagekit graphdriver plugin and a private dockerd 20.10 on it, for tests and
benchmarks: each started in the background in a directory of its own, stopped by pid.

dockerd finds v1 plugins only in /run/docker/plugins, so the plugin's socket is there; its
name carries a random suffix, so that runs on one machine do not meet. Everything else —
dockerd's data root, exec root (with the containerd it starts), API socket, pidfile, config,
the store — lives in the given directory.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest
from cliutil import command
from graphclient import GraphClient
from hostutil import (  # noqa: F401 - the Docker tests import them from here
    force_cleanup,
    loop_devices_under,
    mounts_under,
    processes_mentioning,
    remove_stale_socket,
    stop_process,
    tail,
    wait_until,
)

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client, of the daemon's own version
PLUGIN_DIR = "/run/docker/plugins"
DRIVERS = ["vfs", "overlay", "aufs", "devicemapper", "btrfs"]
# devicemapper: a small pool (a fresh base device is formatted in a second, not ten), and
# deferred removal and deletion, as Docker advised for devicemapper hosts: a thin device can
# stay busy for a moment after its filesystem is unmounted (a container being created on the
# host holds a copy of the mount in its new mount namespace), and the driver, unlike Docker's
# deviceset (which retried for up to 20 s), fails at once without them.
DRIVER_OPTIONS = {"devicemapper": ["dm.basesize=2G", "dm.loopdatasize=20G",
                                   "dm.use_deferred_removal=true", "dm.use_deferred_deletion=true"]}


def require_docker() -> None:
    for tool in (DOCKERD, DOCKER):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is missing: install docker.io (scripts/bootstrap.sh)")


class Plugin:
    """`python -m storagekit.dockerplugin ... serve` in the background."""

    def __init__(self, root: Path, driver: str, log: Path, options: list[str] | None = None,
                 name: str | None = None, socket: str | None = None) -> None:
        self.root, self.driver, self.log = root, driver, log
        self.options = list(options or [])
        self.name = name or f"storagekit-{driver}-t{secrets.token_hex(4)}"
        self.own_socket = socket is not None
        self.socket = socket or f"{PLUGIN_DIR}/{self.name}.sock"
        self.proc: subprocess.Popen | None = None
        self.client = GraphClient(self.socket)

    def argv(self) -> list[str]:
        # the storagekit command, as users start the plugin
        argv = [command(), "--root", str(self.root), "--driver", self.driver]
        for o in self.options:
            argv += ["-o", o]
        argv += ["docker-plugin", "serve", "--name", self.name, "--log-level", "debug"]
        return argv + (["--socket", self.socket] if self.own_socket else [])

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(f"plugin {self.name}", lambda: self.client.activate() == ["GraphDriver"],
              self.proc, self.log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the plugin by its pid; its exit status."""
        assert self.proc is not None
        code = stop_process(self.proc, sig)
        self.proc = None
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Dockerd:
    """dockerd --experimental -s PLUGIN, everything of it under `home`."""

    def __init__(self, home: Path, plugin: str, storage_opts: list[str] | None = None) -> None:
        self.home, self.plugin = home, plugin
        self.storage_opts = list(storage_opts or [])
        self.socket = str(home / "docker.sock")
        self.pidfile = home / "docker.pid"
        self.log = home / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        home.mkdir(parents=True, exist_ok=True)
        (home / "daemon.json").write_text("{}")  # not the host's /etc/docker/daemon.json
        (home / "cli").mkdir(exist_ok=True)  # the client's config, not ~/.docker

    def argv(self) -> list[str]:
        argv = [DOCKERD, "--config-file", str(self.home / "daemon.json"),
                "--data-root", str(self.home / "data"), "--exec-root", str(self.home / "exec"),
                "-H", f"unix://{self.socket}", "--pidfile", str(self.pidfile),
                "--iptables=false", "--bridge=none", "--experimental", "-s", self.plugin]
        for o in self.storage_opts:
            argv += ["--storage-opt", o]
        return argv

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until("dockerd", lambda: self.docker("version", check=False).returncode == 0,
              self.proc, self.log, timeout=90)

    def stop(self) -> int:
        assert self.proc is not None
        pid = int(self.pidfile.read_text()) if self.pidfile.exists() else self.proc.pid
        assert pid == self.proc.pid, (pid, self.proc.pid)
        code = stop_process(self.proc, timeout=90)
        self.proc = None
        return code

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_API_VERSION="1.41",
                   DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(self.home / "cli"))
        return env

    def docker(self, *args: str, check: bool = True, binary: bool = False,
               timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the docker client; binary: stdout as bytes (docker save, docker export)."""
        proc = subprocess.run([DOCKER, *args], env=self.env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, text=not binary)
        if check and proc.returncode != 0:
            stderr = proc.stderr.decode(errors="replace") if binary else proc.stderr
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{stderr}\n--- dockerd log:\n{tail(self.log)}")
        return proc

    def out(self, *args: str, **kw) -> str:
        return self.docker(*args, **kw).stdout

    def inspect(self, *args: str) -> list[dict]:
        return json.loads(self.out("inspect", *args))


# The thin engine's own mount: its pool's devices as files, there while a device is active.
THIN_POOL_MOUNT = "fuse.storagekit-thin"
# The btrfs driver's own filesystem (its loopback): there from Init until Cleanup. Its layers
# are subvolumes, never mounts of their own.
BTRFS_LOOPBACK = "btrfs"
