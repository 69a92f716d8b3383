"""What a daemon killed without cleaning up leaves behind, and its removal: a dead FUSE mount
on DIR/dev (its connection aborted: every access fails with ENOTCONN) and loop devices whose
backing file is one of that mount's files.

Only call this when no daemon of the pool is alive (the caller holds DIR/lock and
daemon.pid is not locked, or is the new daemon itself): every such mount or loop is stale.
"""

from __future__ import annotations

import errno
import os

from ... import _native
from . import loopdev
from .layout import PoolDir

MNT_DETACH = 2


def fuse_mounts(pd: PoolDir) -> list[str]:
    """Mounts on DIR/dev (normally none or one; stacked ones count once each)."""
    target = str(pd.mountpoint)
    return [m["target"] for m in _native.mount_table() if m["target"] == target]


def stale_loops(pd: PoolDir) -> dict[str, str]:
    """{loop device: backing file}: those over the pool's mount, and every loop device over
    a dead thin engine's file (a killed daemon's: once its mount is detached, the file names
    no longer say which pool they were; dead, they serve nobody)."""
    loops = loopdev.loops_backed_by(str(pd.mountpoint))
    loops.update(loopdev.dead_thin_loops())
    return loops


def clean_stale(pd: PoolDir) -> list[str]:
    """Detach stale loop devices, then unmount dead FUSE mounts. Returns one line per thing
    done or found, for the log. A loop device still mounted or open stays attached until its
    last user lets go (the kernel then detaches it: autoclear); it is reported."""
    report = []
    for dev, backing in sorted(stale_loops(pd).items()):
        busy = loopdev.in_use(dev)
        try:
            loopdev.detach(dev)
            if busy:
                report.append(f"stale {dev} ({backing}) will detach when released: {busy}")
            else:
                report.append(f"detached stale {dev} ({backing})")
        except OSError as e:
            report.append(f"cannot detach stale {dev} ({backing}): {os.strerror(e.errno or 0)}")
    for target in fuse_mounts(pd):
        try:
            _native.umount(target, MNT_DETACH)
            report.append(f"unmounted dead FUSE mount {target}")
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                report.append(f"cannot unmount {target}: {os.strerror(e.errno or 0)}")
    return report
