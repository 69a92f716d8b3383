"""The unix sockets the long-running interfaces listen on (the containerd snapshotter, the
Docker plugin): claiming the path at start, and giving it back at the end."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from .errors import InvalidArgument


def claim_socket(path: str) -> None:
    """Make way for a socket at path: its directory exists; a stale socket (nobody is
    listening: a server that was killed) goes; a live one, or anything else, is an error."""
    os.makedirs(os.path.dirname(path) or ".", 0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise InvalidArgument(f"{path}: another process is serving this socket")


def release_socket(path: str, inode: int | None) -> None:
    """Remove our socket at path (inode: the one we bound), not one a later server has put
    there meanwhile."""
    with contextlib.suppress(OSError):
        if inode is not None and os.lstat(path).st_ino == inode:
            os.unlink(path)
