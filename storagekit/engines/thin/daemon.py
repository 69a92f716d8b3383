"""The daemon of one pool directory: it holds the pool (the engine's flock), serves the active
thin devices as files over FUSE (DIR/dev/<id>, read and written by the C++ engine from
libfuse's worker threads), attaches a loop device to each, and answers control requests on
DIR/control.sock (protocol.py). It starts with its first device and exits when the last one
is deactivated, on SIGTERM/SIGINT, or on a "stop" request, detaching its loop devices and
unmounting DIR/dev on the way out.

    python -m storagekit.engines.thin.daemon DIR --activate ID[:SIZE] [--ready-fd FD] [--foreground]

The client (client.py) starts it; FD receives one JSON reply line when the daemon serves (or
why it could not start).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import selectors
import signal
import socketserver
import sys
import threading
import time

from ..._native import ThinFuse
from ...errors import InvalidArgument
from . import engine, loopdev, protocol
from .errors import DaemonError, DeviceBusy, DeviceNotActive, DeviceNotFound, ThinError
from .freeze import quiesced
from .layout import PoolDir
from .stale import clean_stale

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PR_SET_IO_FLUSHER = 57
HEALTH_INTERVAL = 1.0  # seconds between checks that our loop devices are still ours
DRAIN_WAIT = 30.0  # seconds for a client in the backlog to send its request
RELEASE_WAIT = 5.0  # seconds a detached loop device gets to close its file


def log(pd: PoolDir, text: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {text}\n"
    with open(pd.log, "a") as f:
        f.write(line)


def lock_pidfile(pd: PoolDir) -> int:
    """Take DIR/daemon.pid for the daemon's whole life (released by the kernel at exit)."""
    fd = os.open(pd.pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DaemonError(f"thin pool {pd.root}: another daemon already serves it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def size_of(pd: PoolDir, dev_id: int, size: int | None) -> int:
    if size is None:
        size = pd.read_sizes().get(dev_id)
        if size is None:
            raise InvalidArgument(f"thin pool {pd.root}: thin device {dev_id} has no recorded "
                                  f"size; give one to activate it")
    if size <= 0 or size % 512:
        raise InvalidArgument(f"thin pool {pd.root}: device size {size} is not a positive "
                              f"multiple of 512 bytes")
    return size


class Daemon:
    def __init__(self, pd: PoolDir) -> None:
        self.pd = pd
        self.lock = threading.Lock()
        self.active: dict[int, str] = {}  # id -> /dev/loopN
        self.stopping = False
        self.stop_event = threading.Event()
        self.pool: Any = None
        self.fuse: ThinFuse | None = None
        self.server: socketserver.UnixStreamServer | None = None
        self.serving = False

    # ----------------------------------------------------------------- start and stop

    def start(self) -> None:
        self.pidfd = lock_pidfile(self.pd)
        for line in clean_stale(self.pd):
            log(self.pd, line)
        # This process serves I/O the block layer waits for: its allocations must not wait
        # for writeback through its own devices. Set before any thread exists, so that the
        # engine's committer and libfuse's workers inherit it.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0)
        self.pool = engine.open_pool(self.pd, commit_interval=1.0)
        self.pd.mountpoint.mkdir(exist_ok=True)
        self.fuse = ThinFuse(self.pool, self.pd.mountpoint, fsname=f"thin:{self.pd.root}")
        try:
            self.pd.socket.unlink()
        except FileNotFoundError:
            pass
        with protocol.socket_path(self.pd) as path:
            self.server = _Server(path, self)
        os.chmod(self.pd.socket, 0o600)
        log(self.pd, f"serving {self.pd.root}")

    def serve(self) -> None:
        assert self.server is not None
        thread = threading.Thread(target=self.server.serve_until_woken, daemon=True)
        self.serving = True
        thread.start()
        while not self.stop_event.wait(HEALTH_INTERVAL):
            self.check_loops()
        self.shutdown()
        thread.join(timeout=5)

    def shutdown(self) -> None:
        with self.lock:
            self.stopping = True
        if self.server is not None:
            try:
                self.pd.socket.unlink()
            except FileNotFoundError:
                pass
            if self.serving:
                self.server.shutdown()
            self.drain()
            self.server.server_close()
        with self.lock:
            for dev_id in sorted(self.active):
                self.release(dev_id, force=True)
        if self.fuse is not None:
            if not self.fuse.stop(2.0):
                log(self.pd, "FUSE connection still in use at exit: aborted")
        if self.pool is not None:
            try:
                self.pool.close()
            except OSError as e:
                log(self.pd, f"closing the pool: {e}")
        log(self.pd, "stopped")

    def drain(self) -> None:
        """Answer "retry" to connections still waiting in the listen backlog (made before the
        socket was unlinked): closing the socket would reset them with no answer at all."""
        assert self.server is not None
        listener = self.server.socket
        listener.setblocking(False)
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, OSError):
                return
            with conn:
                try:
                    # The client sends its request right after connecting, but it may be
                    # descheduled for a while (dozens of CLI processes starting at once):
                    # closing before it sent would leave it with no answer at all.
                    conn.settimeout(DRAIN_WAIT)
                    protocol.read_line(conn)
                    conn.sendall(protocol.encode({"ok": False, "retry": True}))
                except OSError:
                    pass

    def check_loops(self) -> None:
        """A loop device detached behind our back (losetup -d) deactivates its device."""
        with self.lock:
            if self.stopping:
                return
            for dev_id, loop in sorted(self.active.items()):
                if loopdev.backing_file(loop) != str(self.pd.device_file(dev_id)):
                    log(self.pd, f"{loop} of thin device {dev_id} was detached by someone else")
                    self.release(dev_id, force=True)
            if not self.active:
                self.stopping = True
                self.stop_event.set()

    # ------------------------------------------------------------------------ requests

    def handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The reply, and whether the daemon stops once it is sent."""
        op = request.get("op")
        with self.lock:
            if self.stopping:
                return {"ok": False, "retry": True}, False
            try:
                result = self.dispatch(str(op), request)
            except (ThinError, InvalidArgument, OSError) as e:
                return protocol.error_reply(e), False
            except Exception as e:  # a bug: keep serving the devices
                log(self.pd, f"{op}: {type(e).__name__}: {e}")
                return protocol.error_reply(e), False
            exiting = not self.active
            if exiting:
                self.stopping = True
            return {"ok": True, "result": result}, exiting

    def dispatch(self, op: str, req: dict[str, Any]) -> Any:
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "message":
            return self.message(str(req["text"]))
        if op == "status":
            return engine.status(self.pool, self.pd, self.active, os.getpid())
        if op == "active":
            return {str(k): v for k, v in sorted(self.active.items())}
        if op == "activate":
            size = req.get("size")
            return {"loop": self.activate(int(req["id"]), None if size is None else int(size))}
        if op == "deactivate":
            self.deactivate(int(req["id"]))
            return {"exiting": not self.active}
        if op == "stop":
            busy = [why for loop in self.active.values() if (why := loopdev.in_use(loop))]
            if busy:
                raise DeviceBusy(f"thin pool {self.pd.root}: cannot stop: {'; '.join(busy)}")
            for dev_id in sorted(self.active):
                self.release(dev_id)
            return {"exiting": True}
        raise InvalidArgument(f"unknown control request {op!r}")

    def message(self, text: str) -> None:
        verb, ids = engine.parse_ids(text)
        origin = ids[1] if verb == "create_snap" and len(ids) > 1 else None
        if origin in self.active:
            # A snapshot of a live device is taken as dm does it: with its filesystem frozen.
            with quiesced(self.active[origin]):
                engine.send_message(self.pool, self.pd, text, set(self.active))
        else:
            engine.send_message(self.pool, self.pd, text, set(self.active))

    def activate(self, dev_id: int, size: int | None) -> str:
        pd = self.pd
        if dev_id in self.active:
            recorded = pd.read_sizes().get(dev_id)
            if size is not None and size != recorded:
                raise DeviceBusy(f"thin pool {pd.root}: thin device {dev_id} is active with "
                                 f"size {recorded}; deactivate it to change its size")
            return self.active[dev_id]
        if dev_id not in self.pool.devices():
            raise DeviceNotFound(f"thin pool {pd.root}: activate {dev_id}: no such thin device")
        size = size_of(pd, dev_id, size)
        sizes = pd.read_sizes()
        if sizes.get(dev_id) != size:
            sizes[dev_id] = size
            pd.write_sizes(sizes)
        assert self.fuse is not None
        self.fuse.add(dev_id, size)
        try:
            # A read-only pool (needs_check) makes read-only devices, as dm-thin does.
            loop = loopdev.attach(pd.device_file(dev_id),
                                  read_only=self.pool.status()["mode"] == "ro")
        except BaseException:
            self.fuse.remove(dev_id, 1.0)
            raise
        self.active[dev_id] = loop
        log(pd, f"thin device {dev_id} ({size} bytes) active on {loop}")
        return loop

    def deactivate(self, dev_id: int) -> None:
        loop = self.active.get(dev_id)
        if loop is None:
            raise DeviceNotActive(f"thin pool {self.pd.root}: thin device {dev_id} is not active")
        busy = loopdev.in_use(loop)
        if busy:
            raise DeviceBusy(f"thin pool {self.pd.root}: thin device {dev_id} is in use: "
                             f"{busy}")
        self.release(dev_id)

    def release(self, dev_id: int, force: bool = False) -> None:
        """Detach the loop device, hide the file, commit. With force (the daemon is going
        away), a loop device still in use is left to the kernel's autoclear."""
        loop = self.active.pop(dev_id)
        busy = loopdev.in_use(loop) if force else None
        try:
            loopdev.detach(loop)
        except OSError as e:
            log(self.pd, f"detaching {loop}: {e}")
        if busy:
            log(self.pd, f"thin device {dev_id}: {busy}; its I/O fails from now on")
        assert self.fuse is not None
        if not self.fuse.remove(dev_id, 0.5 if force else RELEASE_WAIT):
            log(self.pd, f"thin device {dev_id}: its file is still open after the detach")
        try:
            self.pool.commit()
        except OSError as e:
            log(self.pd, f"commit after deactivating {dev_id}: {e}")
        log(self.pd, f"thin device {dev_id} deactivated ({loop})")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        daemon: Daemon = self.server.daemon  # type: ignore[attr-defined]
        try:
            line = self.rfile.readline(1 << 20)
            request = json.loads(line) if line.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as e:
            self.wfile.write(protocol.encode(protocol.error_reply(InvalidArgument(
                f"malformed control request: {e}"))))
            return
        reply, exiting = daemon.handle(request)
        try:
            self.wfile.write(protocol.encode(reply))
            self.wfile.flush()
        finally:
            if exiting:
                daemon.stop_event.set()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves until shutdown() wakes it through a pipe. socketserver's serve_forever polls
    for its shutdown flag instead, and the last deactivation (every container's exit on
    devicemapper) would wait up to a poll interval for the daemon to go."""

    daemon_threads = True

    def __init__(self, path: str, daemon: Daemon) -> None:
        self.daemon = daemon
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopped = threading.Event()
        super().__init__(path, _Handler)

    def serve_until_woken(self) -> None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.socket, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while True:
                    events = sel.select()
                    if any(key.fileobj == self._wake_r for key, _ in events):
                        return
                    self.handle_request()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        os.write(self._wake_w, b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)


# ---------------------------------------------------------------------------- main


def _report(fd: int | None, reply: dict[str, Any], pd: PoolDir | None = None) -> None:
    """Tell the client that started the daemon how it went. A client that died meanwhile
    (killed just as the daemon got ready) is no reason to stop serving: the device it asked
    for stays active, to be deactivated by whoever finishes what the client left."""
    if fd is None:
        return
    try:
        os.write(fd, protocol.encode(reply))
    except BrokenPipeError:
        if pd is not None:
            log(pd, "the client that started the daemon is gone; serving on")
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    # A fixed help width: sizing it to the terminal imports shutil and the compression
    # modules with it, on every start of the daemon.
    p = argparse.ArgumentParser(prog="python -m storagekit.engines.thin.daemon",
                                formatter_class=lambda prog: argparse.HelpFormatter(prog, width=80))
    p.add_argument("dir")
    p.add_argument("--activate", required=True, metavar="ID[:SIZE]")
    p.add_argument("--ready-fd", type=int)
    p.add_argument("--foreground", action="store_true",
                   help="do not fork (the caller waits for the daemon itself)")
    args = p.parse_args(argv)
    if not args.foreground and os.fork() > 0:
        os._exit(0)  # the client reaps this one; the daemon is reparented
    try:
        os.setsid()  # no terminal, no signals meant for the client's process group
    except PermissionError:
        pass  # already a session leader
    ready = args.ready_fd
    try:
        pd = PoolDir.at(args.dir)
    except ThinError as e:
        _report(ready, protocol.error_reply(e))
        return 1
    dev, _, size = args.activate.partition(":")
    daemon = Daemon(pd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: daemon.stop_event.set())
    try:
        daemon.start()
        with daemon.lock:
            loop = daemon.activate(int(dev), int(size) if size else None)
    except BaseException as e:
        log(pd, f"cannot start: {e}")
        _report(ready, protocol.error_reply(e))
        daemon.shutdown()
        return 1
    _report(ready, {"ok": True, "result": {"loop": loop, "pid": os.getpid()}}, pd)
    daemon.serve()
    return 0


if __name__ == "__main__":
    code = main()
    # The client that deactivated the last device waits for this process to exit: skip the
    # interpreter's teardown (the pool is closed and the FUSE mount gone by now).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
