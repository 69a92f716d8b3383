"""What a test finds on the host under a directory of its own — mounts, loop devices,
processes — and the forced cleanup after a failure, for the tests that run real daemons
(dockerd, containerd, storagekit's plugin and snapshotter)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def mounts_under(path: Path | str, *, but: tuple[str, ...] = ()) -> list[str]:
    """Mount points at or under path (of any type but those in `but`)."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            target, fstype = fields[4], fields[fields.index("-") + 1]
            if (target.startswith(prefix) or target == prefix[:-1]) and fstype not in but:
                found.append(target)
    return sorted(found)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Processes (other than this one) whose command line mentions text."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append((int(pid), cmd.strip()))
    return out


def loop_devices_under(path: Path | str) -> list[str]:
    """Loop devices whose backing file is under path."""
    prefix = str(path).rstrip("/") + "/"
    out = []
    for d in Path("/sys/block").glob("loop*"):
        try:
            backing = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(prefix):
            out.append(f"/dev/{d.name}")
    return out


def unmount_all_under(path: Path | str) -> None:
    """Lazily unmount everything at or under path, innermost first."""
    for target in reversed(mounts_under(path)):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def remove_stale_socket(path: str) -> None:
    """A server that was killed leaves its socket: remove it if nobody listens there."""
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def force_cleanup(home: Path) -> None:
    """After a failure: whatever still runs, is mounted or attached under home goes, so one
    broken test does not leak into the rest of the run."""
    # The loop devices first, while their backing files (on a thin engine's FUSE mount) can
    # still be named: once that mount is gone they cannot be told from anybody else's.
    loops = loop_devices_under(home)
    unmount_all_under(home)
    for dev in loops:  # a device still open is detached when its last user closes it
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
    for pid, _ in processes_mentioning(str(home)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    unmount_all_under(home)
    shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- daemons the tests start


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait for ready() to hold while proc runs; fail with proc's log if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} is not ready after {timeout} s:\n{tail(log)}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Signal proc and wait for it; SIGKILL (and an error) if it outlives the timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"pid {proc.pid} did not stop on signal {sig} in {timeout} s") from None
    return proc.returncode
