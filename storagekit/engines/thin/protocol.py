"""The daemon's control protocol: one JSON object per line over DIR/control.sock, one request
and one reply per connection.

    request   {"op": "activate", "id": 1, "size": 1073741824}
    reply     {"ok": true, "result": ...}
              {"ok": false, "type": "DeviceBusy", "errno": 16, "error": "<one line>"}
              {"ok": false, "retry": true}      the daemon is stopping: ask again later
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket

from ...errors import InvalidArgument, StorageError
from .errors import BY_NAME, DaemonError, ThinError
from .layout import PoolDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

REPLY_TIMEOUT = 300.0  # an activation or a snapshot of a busy origin can take a while
_MAX_LINE = 1 << 20
#: Requests that change nothing: one the daemon hung up on can simply be asked again.
IDEMPOTENT = frozenset({"ping", "status", "active"})


class NoDaemon(Exception):
    """Nothing listens on the pool's control socket."""


class Retry(Exception):
    """The daemon is on its way out; the request was not carried out."""


@contextlib.contextmanager
def socket_path(pd: PoolDir) -> Iterator[str]:
    """A path for pd.socket that fits sun_path (108 bytes): a long directory is reached
    through /proc/self/fd of an O_PATH descriptor of it."""
    path = str(pd.socket)
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(pd.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{pd.socket.name}"
    finally:
        os.close(fd)


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > _MAX_LINE:
            raise ValueError("control message too long")
    return bytes(buf)


def error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ThinError):
        return {"ok": False, "type": type(exc).__name__, "errno": exc.errno, "error": str(exc)}
    if isinstance(exc, InvalidArgument):
        return {"ok": False, "type": "InvalidArgument", "errno": errno.EINVAL, "error": str(exc)}
    if isinstance(exc, StorageError):
        return {"ok": False, "type": "ThinError", "errno": None, "error": str(exc)}
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return {"ok": False, "type": "ThinError", "errno": exc.errno,
                "error": f"{exc.strerror or exc}{where}"}
    return {"ok": False, "type": "DaemonError", "errno": errno.EIO,
            "error": f"internal error in the daemon: {type(exc).__name__}: {exc}"}


def raise_error(reply: dict[str, Any]) -> None:
    message = str(reply.get("error", "the daemon failed"))
    kind = reply.get("type")
    if kind == "InvalidArgument":
        raise InvalidArgument(message)
    raise BY_NAME.get(str(kind), ThinError)(message, reply.get("errno"))


def call(pd: PoolDir, op: str, timeout: float = REPLY_TIMEOUT, **args: Any) -> Any:
    """Send one request to the pool's daemon and return its result. NoDaemon when none
    listens; Retry when it is stopping; the daemon's error (re-raised) when it refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with socket_path(pd) as path:
            try:
                sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise NoDaemon(str(pd.root)) from e
        sock.sendall(encode({"op": op, **args}))
        line = read_line(sock)
    except TimeoutError:
        raise DaemonError(f"thin pool {pd.root}: the daemon did not answer {op!r} within "
                          f"{timeout:.0f} s (see {pd.log})") from None
    except (ConnectionResetError, BrokenPipeError):
        line = b""
    finally:
        sock.close()
    if not line:
        if op in IDEMPOTENT:  # asked of a daemon that was going away: ask again
            raise Retry(op)
        raise DaemonError(f"thin pool {pd.root}: the daemon hung up on {op!r} (see {pd.log})")
    reply = json.loads(line)
    if reply.get("ok"):
        return reply.get("result")
    if reply.get("retry"):
        raise Retry(op)
    raise_error(reply)
