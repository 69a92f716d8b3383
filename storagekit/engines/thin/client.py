"""The client API of thin pools (what the devicemapper driver uses).

A pool is a directory (layout.py). While some of its devices are active, a daemon holds the
pool and every call goes through its control socket; otherwise the client opens the pool
itself for messages and status. activate() starts the daemon when none runs; the daemon
exits once its last device is deactivated, and deactivate() returns only after it has.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..._native import ThinPool
from ...errors import InvalidArgument
from ...options import format_size, parse_size
from .. import daemon
from . import engine, protocol
from .errors import (
    DaemonError,
    DeviceNotActive,
    PoolBusy,
    PoolExists,
    ThinCheckFailed,
    ToolMissing,
)
from .layout import DEFAULT_NO_SPACE_TIMEOUT, PoolConfig, PoolDir, write_json
from .stale import clean_stale

TYPE_CHECKING = False  # lean for devicemapper's boots too, though outside storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

KIB = 1024
DEFAULT_BLOCK_SIZE = 64 * KIB
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 64 * KIB, 1 << 30
MAX_METADATA_SIZE = 255 * 16320 * 4096  # what dm-thin metadata can address
START_TIMEOUT = 60.0  # seconds for a daemon to come up (mount, first loop device)
EXIT_TIMEOUT = 60.0  # seconds for a daemon to go away after its last device


# ------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _pool_lock(pd: PoolDir, timeout: float = 120.0) -> Iterator[None]:
    """DIR/lock: held by whoever starts a daemon or opens the pool without one."""
    fd = os.open(pd.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PoolBusy(f"thin pool {pd.root}: another client keeps {pd.lockfile} "
                                   f"locked") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _daemon_pid(pd: PoolDir) -> int | None:
    """The pid of the pool's live daemon (it holds daemon.pid locked), or None."""
    try:
        fd = os.open(pd.pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


def _wait_daemon_gone(pd: PoolDir, timeout: float = EXIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while (pid := _daemon_pid(pd)) is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DaemonError(f"thin pool {pd.root}: its daemon (pid {pid}) neither answers "
                              f"nor exits (see {pd.log}); kill it with SIGTERM")
        # Woken by its exit (engines.daemon waits on a pidfd), not by polling: a device's
        # deactivation waits for this, and so does every container boot on devicemapper.
        # The pid file can name a pid that is not (or no longer) the holder's: then poll.
        if pid > 0 and daemon.alive(pid):
            daemon.wait_exit(pid, min(left, 0.5))
        else:
            time.sleep(min(0.02, left))


def _wait_daemon_serving_or_gone(pd: PoolDir) -> bool:
    """With DIR/lock held and no daemon answering: a daemon may still be starting — whoever
    started it holds DIR/lock until it is ready, unless that client died first. Wait until
    it serves (True) or is gone (False)."""
    deadline = time.monotonic() + START_TIMEOUT + EXIT_TIMEOUT
    while (pid := _daemon_pid(pd)) is not None:
        if pd.socket.exists():
            try:
                protocol.call(pd, "ping")
                return True
            except (protocol.NoDaemon, protocol.Retry):
                pass
        if time.monotonic() > deadline:
            raise DaemonError(f"thin pool {pd.root}: its daemon (pid {pid}) neither answers "
                              f"nor exits (see {pd.log}); kill it with SIGTERM")
        if pid > 0 and daemon.alive(pid):
            daemon.wait_exit(pid, 0.02)
        else:
            time.sleep(0.02)
    return False


def _log(pd: PoolDir, lines: list[str]) -> None:
    if lines:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(pd.log, "a") as f:
            f.writelines(f"{stamp} [client {os.getpid()}] {line}\n" for line in lines)


# ------------------------------------------------------------- daemon or in-process


def _route(pd: PoolDir, op: str, args: dict[str, Any],
           without_daemon: Callable[[], T]) -> T | Any:
    """Send the request to the daemon; when none runs, call without_daemon() holding
    DIR/lock with no daemon alive (so none can appear meanwhile)."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    while True:
        try:
            return protocol.call(pd, op, **args)
        except protocol.NoDaemon:
            pass
        except protocol.Retry:
            pass  # the daemon is exiting: wait for it below
        with _pool_lock(pd):
            try:
                return protocol.call(pd, op, **args)
            except protocol.NoDaemon:
                pass
            except protocol.Retry:
                if time.monotonic() > deadline:
                    raise DaemonError(f"thin pool {pd.root}: its daemon keeps stopping") from None
                time.sleep(0.02)
                continue
            if _wait_daemon_serving_or_gone(pd):
                continue  # a daemon still starting (its starter died): ask it
            return without_daemon()


def _with_pool(pd: PoolDir, fn: Callable[[ThinPool], T]) -> T:
    """Open the pool in this process (no daemon runs: the caller holds DIR/lock)."""
    _log(pd, clean_stale(pd))
    pool = engine.open_pool(pd)
    try:
        return fn(pool)
    finally:
        try:
            pool.close()
        except OSError as e:
            raise engine.engine_error(pd, "close", e) from None


def _start_daemon(pd: PoolDir, dev_id: int, size: int | None) -> str:
    """Start the daemon with its first device; returns the loop device."""
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_inheritable(w, True)
    spec = f"{dev_id}:{size}" if size is not None else str(dev_id)
    # The daemon runs the very storagekit this client was imported from, and without site
    # (-S): it needs nothing else, and site's start-up hooks cost ~30 ms of every start.
    env = dict(os.environ)
    import storagekit

    here = os.path.dirname(os.path.dirname(os.path.abspath(storagekit.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    try:
        with open(pd.log, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-m", "storagekit.engines.thin.daemon", str(pd.root),
                 "--activate", spec, "--ready-fd", str(w)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(w,),
                start_new_session=True, cwd="/", env=env,
            )
        os.close(w)
        w = -1
        proc.wait()  # the first process forks the daemon and exits at once
        line = _read_ready(r, pd)
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    if not line:
        raise DaemonError(f"thin pool {pd.root}: the daemon exited before it was ready"
                          f"{_last_log_line(pd)}")
    reply = json.loads(line)
    if not reply.get("ok"):
        _wait_daemon_gone(pd)
        protocol.raise_error(reply)
    return str(reply["result"]["loop"])


def _read_ready(fd: int, pd: PoolDir) -> bytes:
    data, complete = daemon.read_ready(fd, START_TIMEOUT)
    if not complete:
        raise DaemonError(f"thin pool {pd.root}: the daemon did not get ready within "
                          f"{START_TIMEOUT:.0f} s{_last_log_line(pd)}")
    return data


def _last_log_line(pd: PoolDir) -> str:
    try:
        lines = pd.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f" (last log line: {lines[-1]})" if lines else f" (see {pd.log})"


# ------------------------------------------------------------------------- the API


def default_metadata_size(data_size: int, block_size: int) -> int:
    """Room for every data block mapped about twice over (snapshots diverging), at least
    2 MiB: dm-thin needs roughly 64 bytes of metadata per mapping, a little more for leaves
    left half full."""
    blocks = max(1, data_size // block_size)
    size = max(2 << 20, blocks * 128)
    size = (size + 4095) // 4096 * 4096
    return min(size, MAX_METADATA_SIZE)


def create_pool(dir: str | os.PathLike[str], data_size: int | str,
                metadata_size: int | str | None = None,
                block_size: int | str = DEFAULT_BLOCK_SIZE, *, low_water_mark: int = 0,
                skip_block_zeroing: bool = False, ignore_discard: bool = False,
                no_discard_passdown: bool = False, error_if_no_space: bool = False,
                no_space_timeout: float = DEFAULT_NO_SPACE_TIMEOUT) -> dict:
    """Create a pool in dir (created if missing; it must hold no pool). The data file is
    sparse; the metadata file is allocated. Without error_if_no_space, a write that finds the
    pool full waits for space up to no_space_timeout seconds (from when the pool ran out) and
    then fails with ENOSPC. Returns the new pool's status."""
    data_size = parse_size(data_size, "data size")
    block_size = parse_size(block_size, "block size")
    if (block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE
            or block_size % MIN_BLOCK_SIZE):
        raise InvalidArgument(f"block size {format_size(block_size)} must be a multiple of 64K "
                              f"from 64K to 1G")
    if data_size < block_size:
        raise InvalidArgument(f"data size {format_size(data_size)} is smaller than one block "
                              f"({format_size(block_size)})")
    if not no_space_timeout >= 0:
        raise InvalidArgument(f"no_space_timeout {no_space_timeout} must not be negative")
    if metadata_size is None:
        metadata_size = default_metadata_size(data_size, block_size)
    metadata_size = parse_size(metadata_size, "metadata size")
    if metadata_size < 64 * 4096:
        raise InvalidArgument(f"metadata size {format_size(metadata_size)} is below the "
                              f"minimum of 256K")
    features = tuple(name for name, on in (
        ("skip_block_zeroing", skip_block_zeroing), ("ignore_discard", ignore_discard),
        ("no_discard_passdown", no_discard_passdown), ("error_if_no_space", error_if_no_space),
    ) if on)
    root = os.path.realpath(dir)
    os.makedirs(root, exist_ok=True)
    pd = PoolDir(Path(root))
    if pd.config_file.exists():
        raise PoolExists(f"{root} already holds a thin pool")
    ours = {"metadata", "data", "devices.json", "lock", "daemon.log", ".pool.json.tmp"}
    others = sorted(set(os.listdir(root)) - ours)
    if others:
        raise InvalidArgument(f"{root} is not empty ({', '.join(others[:3])}...); "
                              f"a pool needs a directory of its own")
    config = PoolConfig(block_size // 512, low_water_mark, features, float(no_space_timeout))
    with _pool_lock(pd):
        try:
            pool = ThinPool.create(pd.metadata, pd.data, data_block_size=block_size // 512,
                                   metadata_size=metadata_size, data_size=data_size,
                                   commit_interval=0, low_water_mark=low_water_mark,
                                   **{f: f in features for f in
                                      ("skip_block_zeroing", "ignore_discard",
                                       "no_discard_passdown", "error_if_no_space")})
        except OSError as e:
            raise engine.engine_error(pd, "create", e) from None
        except ValueError as e:
            raise InvalidArgument(f"thin pool {root}: {e}") from None
        try:
            result = engine.status(pool, pd, {}, None)
        finally:
            pool.close()
        write_json(pd.sizes_file, {})
        pd.write_config(config)  # last: the directory is a pool once this exists
    return result


def message(dir: str | os.PathLike[str], text: str) -> None:
    """A dm-thin pool message: "create_thin 1", "create_snap 2 1", "delete 1",
    "set_transaction_id 0 1", "reserve_metadata_snap", "release_metadata_snap". Committed
    when it returns, as dm-thin commits after each message. Deleting an active device is
    refused (DeviceBusy). A snapshot of an active device is taken with the
    filesystems on it frozen, so it is consistent, as with dm's suspend."""
    pd = PoolDir.at(dir)
    text = " ".join(str(text).split())
    _route(pd, "message", {"text": text},
           lambda: _with_pool(pd, lambda pool: engine.send_message(pool, pd, text, set())))


def status(dir: str | os.PathLike[str]) -> dict:
    """The pool's status as the kernel reports it (the keys of ThinPool.status, "line" being
    the kernel's status line), plus "pool", "data_block_bytes", "daemon" (pid or None) and
    "thin_devices": one dict per device (its ThinPool.device_status, "size" in bytes or
    None, "loop": its loop device when active)."""
    pd = PoolDir.at(dir)
    return _route(pd, "status", {},
                  lambda: _with_pool(pd, lambda pool: engine.status(pool, pd, {}, None)))


def activate(dir: str | os.PathLike[str], dev_id: int, size: int | str | None = None) -> str:
    """Make thin device dev_id a block device of `size` bytes (a multiple of 512; None: the
    size recorded at its last activation, or inherited by a snapshot from its origin) and
    return its loop device ("/dev/loopN"). Starts the pool's daemon if needed. Activating an
    active device returns its loop device (DeviceBusy if the size differs)."""
    pd = PoolDir.at(dir)
    dev_id = _device_id(dev_id)
    nbytes = None if size is None else parse_size(size, "device size")
    if nbytes is None and dev_id not in pd.read_sizes():
        raise InvalidArgument(f"thin pool {pd.root}: thin device {dev_id} has no recorded "
                              f"size; give one to activate it")
    args = {"id": dev_id, "size": nbytes}
    result = _route(pd, "activate", args, lambda: {"loop": _start_daemon(pd, dev_id, nbytes)})
    return str(result["loop"])


def deactivate(dir: str | os.PathLike[str], dev_id: int) -> None:
    """Detach the device's loop device (DeviceBusy while it is mounted or open exclusively)
    and commit. When it was the last active device, returns once the daemon has exited."""
    pd = PoolDir.at(dir)
    dev_id = _device_id(dev_id)

    def not_active() -> None:
        raise DeviceNotActive(f"thin pool {pd.root}: thin device {dev_id} is not active")

    result = _route(pd, "deactivate", {"id": dev_id}, not_active)
    if result and result.get("exiting"):
        _wait_daemon_gone(pd)


def active(dir: str | os.PathLike[str]) -> dict[int, str]:
    """{device id: loop device} of the active devices."""
    pd = PoolDir.at(dir)
    result = _route(pd, "active", {}, dict)
    return {int(k): v for k, v in result.items()}


def stop(dir: str | os.PathLike[str]) -> bool:
    """Deactivate every device and stop the daemon (DeviceBusy, changing nothing, while one
    is in use). Returns whether a daemon was running."""
    pd = PoolDir.at(dir)
    result = _route(pd, "stop", {}, lambda: None)
    if result is None:
        return False
    _wait_daemon_gone(pd)
    return True


def check(dir: str | os.PathLike[str], clear_needs_check: bool = False) -> str:
    """Run thin_check on the pool's metadata and return its report. Only while no daemon
    holds the pool: the metadata must be at rest (committed, not changing) for thin_check
    to judge it, so with active devices it raises PoolBusy (deactivate them first)."""
    pd = PoolDir.at(dir)
    import shutil

    tool = shutil.which("thin_check")
    if tool is None:
        raise ToolMissing("thin_check is not installed (apt-get install thin-provisioning-tools)")
    with _pool_lock(pd):
        pid = _daemon_pid(pd)
        if pid is not None:
            try:
                devices = ", ".join(str(d) for d in sorted(
                    int(k) for k in protocol.call(pd, "active", timeout=10)))
            except (protocol.NoDaemon, protocol.Retry):
                devices = None  # on its way out
            if devices is not None:
                raise PoolBusy(f"thin pool {pd.root} is held by its daemon (pid {pid}, active "
                               f"devices: {devices}); thin_check needs the metadata at rest: "
                               f"deactivate them first")
            _wait_daemon_gone(pd)
        _log(pd, clean_stale(pd))
        # Hold the engine's lock so that nothing opens the pool while thin_check reads it.
        fd = os.open(pd.metadata, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PoolBusy(f"thin pool {pd.root} is open in another process "
                               f"(its metadata is locked)") from None
            argv = [tool, str(pd.metadata)]
            if clear_needs_check:
                argv.insert(1, "--clear-needs-check-flag")
            proc = subprocess.run(argv, capture_output=True, text=True)
        finally:
            os.close(fd)
    report = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        lines = [ln for ln in report.splitlines() if ln.strip()]
        worst = next((ln for ln in lines if "error" in ln.lower() or "bad" in ln.lower()),
                     lines[-1] if lines else f"exit status {proc.returncode}")
        raise ThinCheckFailed(f"thin_check found problems in {pd.metadata}: {worst.strip()}")
    return report


def daemon_pid(dir: str | os.PathLike[str]) -> int | None:
    """The pid of the pool's daemon while one runs, else None."""
    return _daemon_pid(PoolDir.at(dir))


def _device_id(dev_id: Any) -> int:
    try:
        value = int(dev_id)
    except (TypeError, ValueError):
        raise InvalidArgument(f"thin device id {dev_id!r} is not a number") from None
    if not 0 <= value < (1 << 24):
        raise InvalidArgument(f"thin device id {value} is out of range (0..16777215)")
    return value


__all__ = ["create_pool", "message", "status", "activate", "deactivate", "active", "stop",
           "check", "daemon_pid", "default_metadata_size"]
