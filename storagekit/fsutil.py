"""Small filesystem jobs that every part of storagekit needs, each done once, here:

* file locks (flock) — exclusive or shared, waiting, with a deadline, or not at all;
* atomic writes — the one durability rule: write a temporary file beside the target, fsync
  it, rename it over the target, fsync the directory. A crash (of the process or the host)
  leaves the old content or the new, never a mix or an empty file;
* atomic outputs — the same for a stream written by native code (an exported image or
  layer), which also writes straight to a device or pipe given as the target instead of
  replacing it with a regular file;
* the nearest existing ancestor of a path (what a not-yet-created store root lives on).

On a container's boot path: it imports only os, fcntl, time and contextlib.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Iterator

_LOCK_FILE = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


# ----------------------------------------------------------------------------- locks


class LockBusy(Exception):
    """A lock that is held by another process, asked for without waiting (or past the
    deadline). Callers turn it into the error that says who holds what."""


def lock(path: str, *, shared: bool = False, wait: bool = True,
         timeout: float | None = None, mode: int = 0o600, create: bool = True) -> int:
    """flock() the file at path (created if missing, unless create=False: then a missing
    file is FileNotFoundError) and return its fd; close the fd to unlock (the kernel also
    unlocks when the process dies). `wait=False`: raise LockBusy at once if another process
    holds it; `timeout`: wait at most that long, then LockBusy."""
    fd = os.open(path, _LOCK_FILE if create else os.O_RDWR | os.O_CLOEXEC, mode)
    try:
        flock(fd, shared=shared, wait=wait, timeout=timeout)
    except BaseException:
        os.close(fd)
        raise
    return fd


def flock(fd: int, *, shared: bool = False, wait: bool = True,
          timeout: float | None = None) -> None:
    """flock() an open fd, as lock() does for a path."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if wait and timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + (timeout or 0.0)
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait or time.monotonic() >= deadline:
                raise LockBusy(fd) from None
            time.sleep(0.01)


def try_lock(path: str, *, shared: bool = False, mode: int = 0o600) -> int | None:
    """lock() without waiting: the fd, or None if another process holds the lock."""
    try:
        return lock(path, shared=shared, wait=False, mode=mode)
    except LockBusy:
        return None


@contextlib.contextmanager
def locked(path: str, *, shared: bool = False, timeout: float | None = None,
           mode: int = 0o600) -> Iterator[int]:
    """`with locked(path):` — hold the lock for the block (see lock())."""
    fd = lock(path, shared=shared, timeout=timeout, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- writes


def fsync_dir(path: str) -> None:
    """fsync a directory: what makes a rename or a new entry in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Replace the file at path with data, durably and atomically (see the module doc)."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    directory, name = os.path.split(os.path.abspath(path))
    tmp = f"{directory}/.{name}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def is_stream_target(path: str) -> bool:
    """Is path an existing device, FIFO or socket — something to write into as a stream,
    never to replace with a file?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def output_target(path: str) -> str:
    """The file an output named `path` goes to: a symlink's target (the link stays, as
    with a shell's `>`); refused with one line if that is a directory or a socket, which
    can be neither replaced by the output nor written to as a stream."""
    from .errors import InvalidArgument

    if os.path.islink(path):
        path = os.path.realpath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"{path} is a directory: name a file to write the output to")
    if stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} is a socket: name a file, a FIFO or a device")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[int]:
    """`with atomic_output("out.tar") as fd:` — an fd to write the whole output to. When the
    block succeeds the output replaces path durably (fsync, rename, fsync of the directory);
    when it fails, or the process dies, path is untouched and nothing is left: the output is
    written to a file without a name (O_TMPFILE) that gets one only once it is complete
    (where the filesystem has no O_TMPFILE, to ``.<name>.partial-<pid>``, which a failure
    removes and `storagekit prune` collects after a kill). A path that is a device or a FIFO
    is written to directly, as a stream; a symlink is followed (see output_target)."""
    path = output_target(os.fspath(path))
    if is_stream_target(path):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    directory, name = os.path.split(os.path.abspath(path))
    tmp = f"{directory}/{partial_name(name)}"
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
        named = False
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        named = True
    try:
        yield fd
        os.fsync(fd)
        if not named:  # a name for the complete file, then the target's
            link_anonymous(fd, directory, os.path.basename(tmp))
            named = True
        os.replace(tmp, path)
    except BaseException:
        if named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    fsync_dir(directory)


def link_anonymous(fd: int, directory: str, name: str) -> None:
    """Give the O_TMPFILE file fd the name directory/name. (os.link without a dir_fd calls
    link(2), which would link /proc's magic link itself; linkat with AT_SYMLINK_FOLLOW links
    the file it names.)"""
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dirfd, follow_symlinks=True)
    finally:
        os.close(dirfd)


PARTIAL_INFIX = ".partial-"


def partial_name(name: str, pid: int | None = None) -> str:
    """The temporary name of an output being written by process pid (this one)."""
    return f".{name}{PARTIAL_INFIX}{os.getpid() if pid is None else pid}"


def dead_temporaries(directory: str) -> list[str]:
    """The temporary files in directory that atomic_write() or atomic_output() of a process
    that is now dead left (".<name>.tmp-<pid>", ".<name>.partial-<pid>")."""
    from .owners import process_start

    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        if not name.startswith("."):
            continue
        for infix in (".tmp-", PARTIAL_INFIX):
            head, sep, pid = name.rpartition(infix)
            if sep and head and pid.isdigit() and process_start(int(pid)) is None:
                out.append(f"{directory}/{name}")
                break
    return out


# ----------------------------------------------------------------------------- paths


def existing_ancestor(path: str | os.PathLike[str]) -> str:
    """The nearest existing directory at or above path (absolute): what a path that is not
    there yet would be created on."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return p


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()
