"""The union filesystem engine: aufs branch semantics over FUSE, in a process of its own.

A union mount must outlive whoever asked for it (a CLI that mounts a layer exits at once), so
the engine runs as a daemon: the program ``storagekit-uniond``, installed in this package
(csrc/programs/uniond.cpp), forks once more, detaches into a session of its own (reparented
to init, so no caller has to reap it) and serves the mount with the native engine
(csrc/union/). The daemon exits when its mount goes away: after an unmount, once the last
file open on it is closed.

    pid = start("/mnt/c1", ["/layers/rw", "/layers/l2", "/layers/l1"])  # top first
    ...
    stop("/mnt/c1")

The first branch is the writable one (aufs ``rw``) unless ``readonly=True``; the others are
read-only branches whose whiteouts count (``ro+wh``). A branch may carry aufs's permission
suffix instead: ``dir=rw``, ``dir=ro``, ``dir=ro+wh``.

If the daemon dies, its mount stays behind, dead: every access fails with ENOTCONN
(``is_dead``). ``stop`` cleans such a mount up too, and a new ``start`` on the same mount
point works afterwards.

Semantics worth knowing (see csrc/union/engine.hpp):
- The writable branch is an aufs/OCI layer at all times: ".wh.<name>" whiteouts,
  ".wh..wh..opq" opaque directories, and aufs's bookkeeping at its top (".wh..wh.aufs",
  ".wh..wh.plnk", ".wh..wh.orph"), which a diff leaves out.
- Names starting with ".wh." are invisible and cannot be made (EPERM); new names are at most
  242 bytes (aufs's limit): a longer one that no branch holds is ENAMETOOLONG for every
  operation, lookups included.
- Directories are reached one name at a time from their parent's descriptor, never by path:
  any depth works, past PATH_MAX too.
- Inode numbers are derived from the real inode and its filesystem's place among the
  branches', so they are the same on every mount of the same branches; a copy-up keeps the
  file's number for the rest of the mount (the next mount gives the copy its own).
- Opening a lower file for writing, truncating it or changing its metadata copies it up first.
  A file opened for reading before someone else copies it up goes on reading the lower data
  (with FUSE passthrough), as overlayfs did before Linux 4.19; new opens see the copy.
- Renaming a directory that has content in read-only branches copies its whole tree up and
  makes it opaque (aufs without dirren would say EXDEV).
- Hard links survive copy-up: every name of a copied-up hardlinked file shares the copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections import namedtuple

from .. import daemon

# Every container boot on aufs imports this module (to start a daemon): it imports little.
TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Iterator

MODULE = "storagekit.engines.union"
#: The daemon: a program, so that a union mount does not wait for an interpreter to start.
#: It is built into the storagekit package directory, beside the native extensions.
PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "storagekit-uniond")
#: Names the daemon has had: daemons started by an earlier install are still recognised.
_PROGRAM_NAMES = (b"storagekit-uniond", b"storagekit-unionfsd")
_MODULE_NAMES = (MODULE.encode(), b"storagekit.unionfs")
READY_FD = 3  # where the daemon finds the write end of the pipe that start() reads


class UnionError(OSError):
    """The engine could not mount the union (errno and the reason from the daemon)."""


class Daemon(namedtuple("Daemon", "pid mountpoint passthrough")):
    pid: int
    mountpoint: str
    passthrough: bool  # FUSE passthrough negotiated with the kernel
    __slots__ = ()


_started: dict[str, Daemon] = {}


def start(
    mountpoint: str | os.PathLike[str],
    branches: list[str | os.PathLike[str]],
    *,
    readonly: bool = False,
    threads: int = 4,
    passthrough: bool = True,
    log: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> int:
    """Mount the union of `branches` (top first) on `mountpoint`; returns the daemon's pid
    once the mount is live. `threads`: request-serving threads. `passthrough=False` keeps all
    file I/O in the daemon instead of asking the kernel for FUSE passthrough. `log`: a file
    the daemon appends its messages to (default: none). Raises UnionError (an OSError) when
    the mount fails."""
    mnt = os.path.abspath(mountpoint)
    brs = [_abs_branch(b) for b in branches]
    if not brs:
        raise ValueError("a union needs at least one branch")
    if not os.access(PROGRAM, os.X_OK):
        raise UnionError(errno.ENOENT, "the union engine's program is missing: build storagekit "
                         "(pip install -e .)", PROGRAM)
    argv = [PROGRAM, "--daemonize", "--threads", str(threads)]
    if readonly:
        argv.append("--readonly")
    if not passthrough:
        argv.append("--no-passthrough")
    argv += ["--ready-fd", str(READY_FD), "--", mnt, *brs]
    r, w = os.pipe()
    held = [r, w]
    try:
        # posix_spawn (vfork and exec), not subprocess: a program needs no fork of this
        # process, and the CLI need not import subprocess. The pipe's write end and the log
        # move above the standard fds first, so the file actions cannot clobber them.
        w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
        held.append(w)
        err = -1
        if log is not None:
            err = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            held.append(err)
            err = fcntl.fcntl(err, fcntl.F_DUPFD_CLOEXEC, 10)
            held.append(err)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, err, 2) if err >= 0
            else (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, READY_FD),
        ]
        child = os.posix_spawn(PROGRAM, argv, os.environ, file_actions=actions, setsid=True)
    except BaseException:
        os.close(r)
        raise
    finally:
        for fd in held[1:]:
            os.close(fd)
    try:
        raw, _ = daemon.read_ready(r, timeout)
    finally:
        os.close(r)
        os.waitpid(child, 0)  # the intermediate process exits as soon as it has forked
    line = raw.decode(errors="replace").strip()
    words = line.split(maxsplit=2)
    if len(words) >= 2 and words[0] == "ok":
        d = Daemon(int(words[1]), mnt, "passthrough=1" in line)
        _started[mnt] = d
        return d.pid
    if len(words) >= 2 and words[0] == "error" and words[1].isdigit():
        code = int(words[1])
        raise UnionError(code, f"{os.strerror(code)}: {words[2] if len(words) > 2 else ''}", mnt)
    # No answer in time: whatever got this far must not stay behind.
    for pid in daemon_pids(mnt):
        daemon.kill(pid)
        daemon.wait_exit(pid, 5)
    if is_fuse_mount(mnt):
        from storagekit import _native

        _native.umount_tree(mnt, detach=True)
    raise UnionError(errno.EIO, f"union engine did not start ({line or 'no answer'})", mnt)


def stop(mountpoint: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
    """Unmount the union (lazily, MNT_DETACH) and wait for its daemon to exit. A daemon that
    still serves files open on the detached mount after `timeout` seconds is killed. Works on
    a dead mount (daemon gone) too; a path that is no union mount is left alone."""
    from storagekit import _native

    mnt = os.path.abspath(mountpoint)
    pids = daemon_pids(mnt)
    if is_fuse_mount(mnt):
        _native.umount_tree(mnt, detach=True)
    for pid in pids:
        daemon.stop(pid, timeout)
    _started.pop(mnt, None)


def daemon_info(mountpoint: str | os.PathLike[str]) -> Daemon | None:
    """What start() learnt about the daemon of this mount point (in this process)."""
    return _started.get(os.path.abspath(mountpoint))


def _engine_processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every engine daemon, found through /proc (the program, or
    `python3 -m storagekit.engines.union` in the moment before it runs the program)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if (os.path.basename(args[0]) in _PROGRAM_NAMES
                or any(m in args for m in _MODULE_NAMES)):
            yield int(entry.name), args


def daemon_pids(mountpoint: str | os.PathLike[str]) -> list[int]:
    """Pids of the engine daemons serving `mountpoint` (found through /proc)."""
    mnt = os.path.abspath(mountpoint)
    out = []
    for pid, args in _engine_processes():
        if b"--" not in args or pid == os.getpid():
            continue
        rest = args[args.index(b"--") + 1 :]
        if rest and os.fsdecode(rest[0]) == mnt:
            out.append(pid)
    return out


def mounts_with_branch(branch: str | os.PathLike[str]) -> list[str]:
    """Mount points served by engine daemons that have `branch` among their branches (what
    uses a layer directory as a branch right now, whoever mounted it)."""
    needle = os.fsencode(os.path.abspath(branch))
    out = []
    for pid, args in _engine_processes():
        if b"--" not in args or pid == os.getpid():
            continue
        mnt, *branches = args[args.index(b"--") + 1 :] or [b""]
        if any(b == needle or b.startswith(needle + b"=") for b in branches):
            out.append(os.fsdecode(mnt))
    return out


def all_daemons() -> list[int]:
    """Pids of every engine daemon on this machine."""
    return [pid for pid, args in _engine_processes() if b"--daemonize" in args]


def is_dead(mountpoint: str | os.PathLike[str]) -> bool:
    """Is `mountpoint` a FUSE mount whose daemon is gone (every access: ENOTCONN)?"""
    try:
        os.statvfs(mountpoint)  # always asks the daemon; stat may answer from the cache
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


# ------------------------------------------------------------------------------- helpers


def _abs_branch(b: str | os.PathLike[str]) -> str:
    s = os.fspath(b)
    for perm in ("=rw", "=ro+wh", "=ro", "=rr", "=rr+wh", "=rw+nolwh"):
        if s.endswith(perm) and not os.path.exists(s):
            return os.path.abspath(s[: -len(perm)]) + perm
    return os.path.abspath(s)


def is_fuse_mount(mountpoint: str) -> bool:
    """Is a FUSE filesystem mounted exactly on mountpoint? (The mount table as libmount
    reads it: mount points with spaces, tabs or newlines are found too.)"""
    from storagekit import _native

    return any(m["target"] == mountpoint and m["fstype"].startswith("fuse")
               for m in _native.mounts_under(mountpoint))


# The mount(8) helper lives in .helper; these names stay importable from here.
from .helper import HELPER, MOUNT_TYPE, mount_helper, mount_options  # noqa: E402

__all__ = ["HELPER", "MOUNT_TYPE", "Daemon", "UnionError", "all_daemons", "daemon_info",
           "daemon_pids", "is_dead", "is_fuse_mount", "mount_helper", "mount_options",
           "start", "stop"]

