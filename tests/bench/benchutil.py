"""Running `storagekit bench` as users do (the installed command), and checking what it
leaves: its report, and nothing else behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from cliutil import command

#: every driver, every workload, at the scale made for these tests (seconds, not minutes)
TINY = ["--scale", "tiny"]


def bench(*args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([command(), "bench", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"storagekit bench {' '.join(map(str, args))} failed "
                             f"({proc.returncode}): {proc.stderr}")
    return proc


def report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def leftovers(directory: Path) -> list[str]:
    """Mounts, loop devices and processes that still use directory, and files in it."""
    d = str(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f
                  if line.split()[4].startswith(d + "/")]
    for loop in Path("/sys/block").glob("loop*"):
        try:
            backing = (loop / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(d + "/"):
            found.append(f"loop {loop.name} on {backing}")
    me = os.getpid()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(proc.name) != me and d + "/" in cmdline and "pytest" not in cmdline:
            found.append(f"process {proc.name}: {cmdline}")
    found += [f"file {p}" for p in directory.iterdir()]
    return found
