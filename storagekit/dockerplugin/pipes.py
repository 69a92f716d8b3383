"""Moving a layer between an HTTP body and the Store without holding it in memory.

The Store reads and writes layer tars on file descriptors, in a worker thread (native code,
GIL released). The event loop meets it at a pipe: it writes a request body into the pipe's
write end (ApplyDiff) or reads a response body from its read end (Diff), one chunk at a time,
waiting on the loop when the pipe is full or empty. A pipe holds at most its capacity, so
memory stays bounded whatever the size of the layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os

CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def pipe() -> tuple[int, int]:
    """A pipe (read end, write end), close-on-exec, made as large as one chunk where the
    kernel allows (fewer wake-ups than the default 64 KiB)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, CHUNK)
    return r, w


async def _ready(fd: int, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    (loop.add_writer if writing else loop.add_reader)(fd, wake)
    try:
        await done
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(fd)


async def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of data to a non-blocking fd, waiting on the loop while it is full. Raises
    BrokenPipeError when the reader has gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, writing=True)
            continue
        view = view[n:]


async def read_chunk(fd: int) -> bytes:
    """The next bytes from a non-blocking fd (b"" at end of file), waiting on the loop."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            await _ready(fd, writing=False)


def close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
