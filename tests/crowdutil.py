"""Many real processes (the installed `storagekit` command) on one store at once, and what
they leave behind: mounts, loop devices, engine daemons under a path."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cliutil import command


class Crowd:
    """Runs one command line N times at once and collects the outcomes."""

    def __init__(self, root: Path, driver: str) -> None:
        self.root, self.driver = root, driver

    def argv(self, *args: str) -> list[str]:
        return [command(), "--root", str(self.root), "--driver", self.driver, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
        return proc

    def together(self, argvs: list[list[str]], timeout: float = 600) -> list[tuple[int, str]]:
        """Start every command at once; (exit status, stderr) of each."""
        procs = [subprocess.Popen(self.argv(*a), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for a in argvs]
        deadline = time.monotonic() + timeout
        out = []
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, err.strip()))
        return out


# What a driver keeps between commands by design, not a leftover: the btrfs driver's own
# filesystem on a loop file (mounted from a store's first use until prune finds it idle, or
# cleanup()), as a daemon keeps its state while it runs.
STANDING_MOUNT = "/btrfs/fs"
STANDING_LOOP_FILE = "/btrfs/btrfs.img"


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    return [t for t in targets if t.startswith(str(path)) and t != f"{path}{STANDING_MOUNT}"]


def loops_under(path: Path) -> list[str]:
    found = []
    for d in Path("/sys/block").glob("loop*"):
        try:
            backing = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(str(path)) and not backing.endswith(STANDING_LOOP_FILE):
            found.append(d.name)
    return found


def daemons_under(path: Path) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read()
        except OSError:
            continue
        if str(path).encode() in args and (b"uniond" in args or b"thin.daemon" in args):
            pids.append(int(pid))
    return pids


def crowd_on(driver: str, tmp_path: Path):  # noqa: ANN201 - a generator for a fixture
    """For a fixture parametrized by driver: a Crowd on a new store, skipped (saying why)
    where the driver cannot run; afterwards whatever the test left is cleared, so that one
    failure does not spill into the next test."""
    import pytest

    from storagekit import registry

    ok, reason = registry.driver_class(driver).probe(tmp_path)
    if not ok:
        pytest.skip(f"{driver}: {reason}")
    c = Crowd(tmp_path / "root", driver)
    yield c
    subprocess.run(c.argv("prune"), capture_output=True)
    pool = c.root / "devicemapper" / "pool"
    if pool.exists():
        subprocess.run(c.argv("thin", "stop", str(pool)), capture_output=True)
    subprocess.run(["umount", "-R", "-l", str(c.root)], capture_output=True)
