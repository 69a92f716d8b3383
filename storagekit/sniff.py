"""Is this input a layer archive at all? Look at its first block before anything is applied.

`layer apply` of a text file used to reach the applier, fail there, and take the layer with it.
The check here reads the start of the input (a tar header: its checksum, or the all-zero block
of an empty archive; or gzip, bzip2 or xz whose first decompressed block is such a header; or a
zstd frame, whose content the applier checks as it goes) and hands back a stream that yields
the whole input, those bytes included, so a pipe is read once.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import zlib
from typing import Any, BinaryIO

from .errors import InvalidArchive

BLOCK = 512
#: How much compressed input may be read to find the first tar block (a gzip header with a
#: long name or comment, a bzip2 block, ...); more than this is not an archive we can start.
PEEK_LIMIT = 1 << 20

GZIP, BZIP2, XZ, ZSTD = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


def tar_header_ok(block: bytes) -> bool:
    """A valid first tar block: a header whose checksum holds (POSIX ustar, GNU and v7 all
    keep it), or the zero block that ends (here: is) an empty archive."""
    if len(block) < BLOCK:
        return False
    if block == bytes(BLOCK):
        return True
    field = block[148:156].replace(b"\x00", b" ").strip()
    try:
        recorded = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:BLOCK])
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:BLOCK]) + 8 * 32
    return recorded in (unsigned, signed)


def _decompressor(head: bytes) -> Any:
    if head.startswith(GZIP):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if head.startswith(BZIP2):
        return bz2.BZ2Decompressor()
    if head.startswith(XZ):
        return lzma.LZMADecompressor()
    return None


def _check(read: Any, label: str | None) -> bytes:
    """Read from read(n) until the input is known to be an archive; returns what was read."""
    seen = bytearray()
    while len(seen) < BLOCK:
        chunk = read(BLOCK - len(seen))
        if not chunk:
            break
        seen += chunk
    head = bytes(seen)
    if not head:
        raise InvalidArchive("the input is empty, not a layer tar", label)
    if head.startswith(ZSTD):
        return head
    inflate = _decompressor(head)
    if inflate is None:
        if tar_header_ok(head):
            return head
        raise InvalidArchive("the input is not a tar (nor gzip, bzip2, xz or zstd)", label)
    out = b""
    pending = head
    while len(out) < BLOCK and not getattr(inflate, "eof", False):
        try:
            out += inflate.decompress(pending, BLOCK - len(out))
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as e:
            raise InvalidArchive(f"the compressed input is corrupt: {e}", label) from None
        # what the decompressor still holds (zlib hands it back; bz2 and lzma keep it)
        pending = getattr(inflate, "unconsumed_tail", b"")
        if pending or not getattr(inflate, "needs_input", True):
            continue
        if len(seen) >= PEEK_LIMIT:
            break
        pending = read(64 << 10)
        if not pending:
            break
        seen += pending
    if not tar_header_ok(out[:BLOCK]):
        raise InvalidArchive("the compressed input does not hold a tar", label)
    return bytes(seen)


class _Prefixed(io.RawIOBase):
    """The bytes already read, then the rest of the input."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def checked_archive(diff: BinaryIO | int, label: str | None = None) -> BinaryIO | int:
    """Raise InvalidArchive unless `diff` starts like a layer archive; return what to read
    the whole archive from (a regular file's fd is peeked at and returned as it is)."""
    if isinstance(diff, int):
        st = os.fstat(diff)
        if stat.S_ISREG(st.st_mode):
            offset = os.lseek(diff, 0, os.SEEK_CUR)
            pos = [offset]

            def pread(n: int) -> bytes:
                data = os.pread(diff, n, pos[0])
                pos[0] += len(data)
                return data

            _check(pread, label)
            return diff
        prefix = _check(lambda n: os.read(diff, n), label)
        return _Prefixed(prefix, lambda n: os.read(diff, n))  # type: ignore[return-value]
    prefix = _check(diff.read, label)
    return _Prefixed(prefix, diff.read)  # type: ignore[return-value]
