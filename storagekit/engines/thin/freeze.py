"""Quiescing an active thin device for a snapshot, as dm's suspend does: filesystems mounted
on its loop device are frozen (FIFREEZE writes back their dirty data and leaves a clean
journal) and the loop device's own page cache is written back.

The freezing and the write-back are done by a helper process, never by the daemon itself:
they wait for block I/O that the daemon's own FUSE workers serve, uninterruptibly. Were the
daemon killed while one of its threads waited so, that thread would never finish, the dying
daemon would keep /dev/fuse open and its FUSE connection alive with nobody to answer it: a
deadlock that only an abort through fusectl ends. A helper stuck in such a wait is set free
when the daemon dies (its connection ends, the I/O fails), and thaws what it froze when its
stdin reaches EOF.
"""

from __future__ import annotations

import contextlib
import errno
import sys

from . import loopdev

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
READY_TIMEOUT = 120.0  # seconds for a busy filesystem to write back its dirty data

# argv: LOOP MOUNT...; prints "ready" once frozen and written back, thaws at a line or EOF.
_HELPER = r"""
import errno, fcntl, os, sys
FIFREEZE, FITHAW = @FIFREEZE@, @FITHAW@
frozen = []
try:
    for mnt in sys.argv[2:]:
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as e:
            os.close(fd)
            # EBUSY: frozen already (also the second mount of one filesystem); EOPNOTSUPP,
            # EINVAL: a filesystem without freeze. Either way it stays as it is.
            if e.errno not in (errno.EBUSY, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            continue
        frozen.append(fd)
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
except OSError as e:
    sys.stdout.write(f"error {e.errno or 0} {e.filename}: {e.strerror}\n")
    sys.stdout.flush()
finally:
    for fd in reversed(frozen):
        try:
            fcntl.ioctl(fd, FITHAW, 0)
        except OSError:
            pass
        os.close(fd)
""".replace("@FIFREEZE@", str(FIFREEZE)).replace("@FITHAW@", str(FITHAW))


@contextlib.contextmanager
def quiesced(loop: str) -> Iterator[None]:
    """Freeze the filesystems on loop and write back its page cache (OSError when that
    fails); thawed on leaving."""
    import subprocess  # here: the daemon imports this module as it starts

    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _HELPER, loop, *loopdev.mounts_of(loop)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=True,
        cwd="/",
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.wait(READY_TIMEOUT)
            assert proc.stderr is not None
            err = line or (proc.stderr.read().strip().splitlines() or ["no reason given"])[-1]
            kind, _, rest = err.partition(" ")
            if kind == "error":
                code, _, what = rest.partition(" ")
                raise OSError(int(code) or errno.EIO, f"cannot quiesce {loop}: {what}")
            raise OSError(errno.EIO, f"cannot quiesce {loop}: {err}")
        yield
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # EOF: the helper thaws and exits
        try:
            proc.wait(READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
