"""What both engine daemons share: how they are started, how they say they are ready, and how
a client waits for them to go.

A mount (union engine) or an active thin device (thin engine) must outlive the process that
asked for it — a CLI call that mounts a layer exits at once — so each engine serves from a
daemon of its own, detached into a new session. The start/ready/stop model is the same for
both:

* start: the client makes a pipe and passes its write end to the daemon, which writes one
  line (the outcome: ready, or why not) and closes it. The client reads it with a deadline
  (``read_ready``); end of file before a line means the daemon died first.
* stop: the client asks the daemon to go (an unmount, a deactivation) and waits for the
  process to exit on a pidfd (``wait_exit``): woken by the exit itself, not by polling.
* a daemon that neither answers nor exits in time is killed (``kill``).

This module is on a container's boot path (every aufs and devicemapper boot starts a daemon):
it imports only os, select, signal and time.
"""

from __future__ import annotations

import os
import select
import signal
import time


def read_ready(fd: int, timeout: float) -> tuple[bytes, bool]:
    """Read a daemon's ready line from fd: (what was read, whether it is complete). Complete
    means a newline or end of file arrived; incomplete means `timeout` seconds passed first
    (the daemon is hung or still working)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return data, False
        chunk = os.read(fd, 65536)
        if not chunk:
            return data, True
        data += chunk
        if data.endswith(b"\n"):
            return data, True


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to exit; True once it has (or never
    existed). The process is reaped too when it is this process's child."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not select.select([pidfd], [], [], max(0.0, timeout))[0]:
            return False
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reparented to init: not ours to reap
        pass
    return True


def alive(pid: int) -> bool:
    """Does process pid exist (a zombie counts)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill(pid: int) -> None:
    """SIGKILL pid if it still exists."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(pid: int, timeout: float) -> bool:
    """Wait for pid to exit; after `timeout` seconds kill it and wait as long again. True if
    it exited by itself."""
    if wait_exit(pid, timeout):
        return True
    kill(pid)
    wait_exit(pid, timeout)
    return False
