"""Quiescing an active thin device for a snapshot, as dm's suspend does: filesystems mounted
on its loop device are frozen (FIFREEZE writes back their dirty data and leaves a clean
journal) and the loop device's own page cache is written back."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from . import loopdev

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


@contextlib.contextmanager
def quiesced(loop: str) -> Iterator[None]:
    frozen: list[int] = []
    try:
        for mnt in loopdev.mounts_of(loop):
            fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as e:
                os.close(fd)
                # EBUSY: already frozen by someone else (also the second mount of one fs);
                # EOPNOTSUPP: a filesystem without freeze. Both leave it as it is.
                if e.errno not in (errno.EBUSY, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                continue
            frozen.append(fd)
        fd = os.open(loop, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        yield
    finally:
        for fd in reversed(frozen):
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            finally:
                os.close(fd)
