"""The snapshotter server as a real process for the tests: `storagekit ... snapshotter serve`
in the background on a store and socket of its own, stopped by pid; and the mounts it hands
out, mounted for real with mount(8) as containerd would mount them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from cliutil import command
from hostutil import (
    force_cleanup,
    loop_devices_under,
    mounts_under,
    processes_mentioning,
    remove_stale_socket,
    stop_process,
)
from snapclient import SnapClient

# devicemapper: a small pool (a fresh base device is formatted in a second), deferred
# removal and deletion (a device can be busy for a moment after its unmount)
DRIVER_OPTIONS = {"devicemapper": ["dm.basesize=1G", "dm.loopdatasize=8G",
                                   "dm.use_deferred_removal=true", "dm.use_deferred_deletion=true"]}
#: the thin engine's own FUSE mount (the pool's files), which stays while the pool runs
THIN_POOL_MOUNT = "fuse.storagekit-thin"


class Server:
    """`storagekit --root HOME/store --driver D snapshotter serve --socket HOME/snap.sock`."""

    def __init__(self, driver: str, home: Path) -> None:
        self.driver, self.home = driver, home
        self.store = home / "store"
        self.socket = str(home / "snap.sock")
        self.log = home / "server.log"
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        argv = [command(), "--root", str(self.store), "--driver", self.driver]
        for o in DRIVER_OPTIONS.get(self.driver, []):
            argv += ["-o", o]
        return [*argv, "snapshotter", "serve", "--socket", self.socket, "--log-level", "debug"]

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if os.path.exists(self.socket):
                with contextlib.suppress(grpc.RpcError), self.client(None) as c:
                    c.list()
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server is not ready after {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def client(self, namespace: str | None = "default") -> SnapClient:
        return SnapClient(self.socket, namespace)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Stop the server by its pid; its exit status."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        return stop_process(proc, sig, timeout)

    def leftovers(self) -> list[str]:
        """What must not be there once the server is stopped (and the pool, on devicemapper,
        released by the caller)."""
        found = [f"mount {m}" for m in mounts_under(self.home)]
        found += [f"loop device {d}" for d in loop_devices_under(self.home)]
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.store))]
        if os.path.exists(self.socket):
            found.append(f"socket {self.socket}")
        return found


def _mount_argv(m, target: str, containerd: bool) -> list[str]:
    """The command line that mounts m on target: mount(8)'s (as `ctr snapshots mounts`
    prints it), or for fuse.* and fuse3.* types with `containerd`, the helper's as
    containerd's mount code runs it (mount.fuse SOURCE TARGET -o OPT... -t TYPE)."""
    options = list(m.options)
    for prefix in ("fuse.", "fuse3."):
        if containerd and m.type.startswith(prefix):
            argv = [f"mount.{prefix[:-1]}", m.source, target]
            for o in options:
                argv += ["-o", o]
            return [*argv, "-t", m.type[len(prefix):]]
    argv = ["mount"]
    if m.type != "bind":
        argv += ["-t", m.type]
    if options:
        argv += ["-o", ",".join(options)]
    return [*argv, m.source, target]


@contextlib.contextmanager
def mounted(mounts, target: Path, *, containerd: bool = True) -> Iterator[Path]:
    """The mounts (a snapshot's, as data) mounted on target for the block, as containerd
    mounts them (or with mount(8): containerd=False)."""
    assert len(mounts) == 1, mounts
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(_mount_argv(mounts[0], str(target), containerd), check=True,
                   capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


def readonly_for_real(path: Path) -> bool:
    """Does a write under path fail with EROFS?"""
    try:
        (path / ".probe-write").write_text("x")
    except OSError as e:
        return e.errno == 30  # EROFS
    (path / ".probe-write").unlink()
    return False


def _release_pool(server: Server) -> None:
    """devicemapper: what `Cleanup` does not stop (the thin pool's engine and loop devices),
    stopped as an administrator would: `storagekit thin` is not ours; the store's cleanup
    through the driver is."""
    if server.driver != "devicemapper":
        return
    code = ("from storagekit.store import Store\n"
            f"s = Store({str(server.store)!r}, 'devicemapper')\n"
            "s.driver.cleanup()\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def stop_and_check(server: Server) -> list[str]:
    left: list[str] = []
    try:
        if server.proc is not None:
            assert server.stop() == 0, f"the server did not exit cleanly:\n{server.tail()}"
        _release_pool(server)
        left = server.leftovers()
    finally:
        if server.leftovers():
            force_cleanup(server.home)
            remove_stale_socket(server.socket)
    return left
