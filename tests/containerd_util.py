"""A private containerd for tests and benchmarks: its own root, state and socket in a
temporary directory, started in the background and stopped (with everything it mounted)
afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Containerd:
    dir: Path
    socket: str

    def ctr(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "-a", self.socket, *args], check=check,
                              capture_output=True, text=True, **kw)


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("containerd did not create its socket")
        time.sleep(0.05)


@contextlib.contextmanager
def running_containerd(under: Path | None = None) -> Iterator[Containerd]:
    """`under`: the directory to make containerd's in (default /var/tmp); its root is
    there, so a snapshotter that needs a filesystem (btrfs) gets the one under is on."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed")
    work = Path(tempfile.mkdtemp(prefix="sk-containerd-", dir=under or "/var/tmp"))
    sock = str(work / "containerd.sock")
    (work / "config.toml").write_text(f"""
version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{work}/debug.sock"
""")
    log = open(work / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(work / "config.toml")],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_for(sock, proc)
        yield Containerd(work, sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        subprocess.run(["sh", "-c", f"grep -o ' {work}[^ ]*' /proc/self/mounts | sort -r | "
                        "xargs -r -n1 umount -l"], check=False)
        shutil.rmtree(work, ignore_errors=True)
