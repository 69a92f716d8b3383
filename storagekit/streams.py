"""Bridges between Python streams and the file descriptors native code reads and writes.

Native archive code works on file descriptors with the GIL released. A caller may hand us a
real file (we pass its fd straight through), a pipe, or any object with ``read()``; and may
want a diff as a readable stream rather than written to an fd. Pipes and one thread bridge
the two worlds without buffering a whole layer in memory.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any, BinaryIO

CHUNK = 1 << 20


def _real_fd(stream: Any) -> int | None:
    """The file descriptor behind stream, if reading it directly gives exactly the bytes
    stream.read() would. Only plain files and pipes qualify: wrappers such as GzipFile or
    tarfile members have a fileno() that belongs to something else."""
    if isinstance(stream, int):
        return stream
    if isinstance(stream, ProducerStream | io.FileIO):
        return stream.fileno()
    if isinstance(stream, io.BufferedReader) and isinstance(stream.raw, io.FileIO):
        # A buffered reader may hold bytes it read ahead of the fd position; a pipe cannot
        # say, so it goes through the pump.
        try:
            if stream.raw.tell() == stream.tell():
                return stream.fileno()
        except OSError:
            pass
    return None


@contextlib.contextmanager
def readable_fd(stream: BinaryIO | int) -> Iterator[int]:
    """Yield a file descriptor from which the bytes of `stream` can be read.

    A stream backed by a file descriptor is used directly; anything else with ``read()`` is
    pumped through a pipe by a thread. If the reader stops early, the pump stops too.
    """
    fd = _real_fd(stream)
    if fd is not None:
        yield fd
        return
    rfd, wfd = os.pipe()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            while True:
                chunk = stream.read(CHUNK)  # type: ignore[union-attr]
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    n = os.write(wfd, view)
                    view = view[n:]
        except BrokenPipeError:
            pass
        except BaseException as e:  # handed to the consumer below
            failure.append(e)
        finally:
            os.close(wfd)

    import threading  # here, not at the top: this module is on every CLI call's path

    thread = threading.Thread(target=pump, name="storagekit-pump", daemon=True)
    thread.start()
    try:
        yield rfd
    finally:
        os.close(rfd)
        thread.join()
    if failure:
        raise failure[0]


class ProducerStream(io.RawIOBase):
    """A readable stream whose bytes a function writes to a pipe in a background thread.

    ``produce(fd)`` runs in the thread with the write end of the pipe. When it fails, the
    reader sees the exception at the end of the stream instead of a silently short stream.
    Closing early stops the producer (its writes fail with EPIPE, which is not an error then).
    """

    def __init__(self, produce: Callable[[int], Any], name: str = "storagekit-producer") -> None:
        super().__init__()
        self._rfd, wfd = os.pipe()
        self._failure: BaseException | None = None
        self.result: Any = None
        self._closing = False

        def run() -> None:
            try:
                self.result = produce(wfd)
            except BaseException as e:
                if not (self._closing and isinstance(e, OSError) and e.errno == errno.EPIPE):
                    self._failure = e
            finally:
                os.close(wfd)

        import threading

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._rfd

    def readinto(self, buffer: Any) -> int:
        n = os.readv(self._rfd, [buffer])
        if n == 0:
            self._thread.join()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
        return n

    def close(self) -> None:
        if self.closed:
            return
        self._closing = True
        os.close(self._rfd)
        self._thread.join()
        super().close()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
