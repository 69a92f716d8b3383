"""A private containerd for tests and benchmarks, and storagekit's snapshotter server for it.

containerd (Debian's 1.6) gets its own root, state, sockets and config in a directory of its
own; its config declares storagekit's snapshotters as proxy plugins at sockets in that
directory (containerd dials a proxy plugin lazily, so the server may start after it). Both
run in the background and are stopped by pid; stopping containerd also ends the runc shims it
started (a shim outlives containerd by design) and unmounts what it left mounted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cliutil import command
from hostutil import (  # noqa: F401 - the containerd tests import them from here
    force_cleanup,
    processes_mentioning,
    stop_process,
    tail,
    unmount_all_under,
    wait_until,
)

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
# devicemapper: a small base device (formatted in a second) in a sparse pool; deferred
# removal, since a thin device can be busy for a moment after its filesystem's unmount.
DRIVER_OPTIONS = {"devicemapper": ["dm.basesize=2G", "dm.loopdatasize=20G",
                                   "dm.use_deferred_removal=true",
                                   "dm.use_deferred_deletion=true"]}


def require_containerd() -> None:
    for tool in (CONTAINERD, CTR):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is missing: install containerd (scripts/bootstrap.sh)")


def listening(path: str) -> bool:
    """Does something accept connections on the unix socket at path?"""
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class Containerd:
    """containerd with everything of it under `home`, and proxy snapshotters at the given
    sockets (name -> socket path)."""

    def __init__(self, home: Path, proxy_plugins: dict[str, str] | None = None) -> None:
        self.home = home
        self.proxy_plugins = dict(proxy_plugins or {})
        self.socket = str(home / "containerd.sock")
        self.config = home / "config.toml"
        self.log = home / "containerd.log"
        self.proc: subprocess.Popen | None = None
        home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())

    def config_text(self) -> str:
        text = f"""version = 2
root = "{self.home}/root"
state = "{self.home}/state"
# no Kubernetes here: CRI would only slow the start and want a CNI setup
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = "{self.home}/debug.sock"
  level = "debug"
"""
        for name, sock in self.proxy_plugins.items():
            text += f"""
[proxy_plugins."{name}"]
  type = "snapshot"
  address = "{sock}"
"""
        return text

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CONTAINERD, "--config", str(self.config)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_until("containerd", lambda: self.ctr("version", check=False,
                                                  timeout=10).returncode == 0,
                   self.proc, self.log)

    def stop(self) -> int:
        """Stop containerd by its pid, then the shims it left and what they mounted."""
        assert self.proc is not None
        code = stop_process(self.proc)
        self.proc = None
        self.end_shims()
        return code

    def restart(self) -> None:
        assert self.stop() == 0, f"containerd did not exit cleanly:\n{tail(self.log)}"
        self.start()

    def shims(self) -> list[tuple[int, str]]:
        # A shim is started with `-address <containerd's socket>`.
        return [(pid, cmd) for pid, cmd in processes_mentioning(self.socket)
                if "containerd-shim" in cmd]

    def end_shims(self) -> None:
        for pid, _ in self.shims():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300,
            **kw) -> subprocess.CompletedProcess:
        """Run ctr against this containerd; a failure (with check) says ctr's stderr and
        containerd's log."""
        proc = subprocess.run([CTR, "-a", self.socket, *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr}\n--- containerd log:\n{tail(self.log)}")
        return proc

    def out(self, *args: str, **kw) -> str:
        return self.ctr(*args, **kw).stdout


class SnapshotterServer:
    """`storagekit --root STORE --driver D [-o ...] snapshotter serve --socket S` in the
    background, as users start it."""

    def __init__(self, store: Path, driver: str, socket_path: str, log: Path,
                 options: list[str] | None = None) -> None:
        self.store, self.driver, self.socket, self.log = store, driver, socket_path, log
        self.options = list(DRIVER_OPTIONS.get(driver, []) if options is None else options)
        self.proc: subprocess.Popen | None = None

    def global_args(self) -> list[str]:
        argv = ["--root", str(self.store), "--driver", self.driver]
        for o in self.options:
            argv += ["-o", o]
        return argv

    def argv(self) -> list[str]:
        return [command(), *self.global_args(), "snapshotter", "serve", "--socket", self.socket]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(f"snapshotter on {self.driver}", lambda: listening(self.socket), self.proc,
                   self.log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server by its pid; its exit status."""
        assert self.proc is not None
        code = stop_process(self.proc, sig)
        self.proc = None
        return code

    def storagekit(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The storagekit command on the server's store (beside the running server)."""
        proc = subprocess.run([command(), *self.global_args(), *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"storagekit {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr}")
        return proc


@contextlib.contextmanager
def running_containerd(proxy_plugins: dict[str, str] | None = None,
                       home: Path | None = None, under: Path | None = None,
                       ) -> Iterator[Containerd]:
    """containerd for the length of a with block, in home (else a fresh temporary directory
    under `under`, default /var/tmp, removed afterwards: its root is there, so a snapshotter
    that needs a filesystem of its own, btrfs, gets the one `under` is on)."""
    require_containerd()
    own = home is None
    home = home or Path(tempfile.mkdtemp(prefix="sk-containerd-", dir=under or "/var/tmp"))
    ctrd = Containerd(home, proxy_plugins)
    try:
        ctrd.start()
        yield ctrd
    finally:
        if ctrd.proc is not None:
            ctrd.stop()
        ctrd.end_shims()
        unmount_all_under(home)
        if own:
            shutil.rmtree(home, ignore_errors=True)
