"""Owners that outlive nothing: a process named by its pid and its start time, so that a pid
reused by another process never passes for the one that died.

A store records such an owner beside what a process is in the middle of making (a layer an
import is still building on, a temporary file outside the store): once the owner is dead, the
collector (Store.collect) knows that what it left is garbage.

On a container's boot path: it imports only os.
"""

from __future__ import annotations

import os

PREFIX = "process "


def process_start(pid: int) -> int | None:
    """The start time of a live process (clock ticks since boot); None for a missing or
    zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


_this: str | None = None


def this_process() -> str:
    """This process as an owner: "process <pid> <start time>"."""
    global _this
    if _this is None or not _this.startswith(f"{PREFIX}{os.getpid()} "):  # after a fork too
        _this = f"{PREFIX}{os.getpid()} {process_start(os.getpid())}"
    return _this


def is_process(owner: str) -> bool:
    return owner.startswith(PREFIX)


def is_alive(owner: str) -> bool:
    """Is the process that `owner` names still running (the same process, not a pid reused)?
    An owner that is not a process is always alive."""
    if not is_process(owner):
        return True
    try:
        pid, start = owner[len(PREFIX):].split()
        return str(process_start(int(pid))) == start
    except ValueError:
        return False
