"""Building tar streams byte by byte, including ones no honest tool would write: bad
checksums, oversized PAX headers, chains of extended headers, lying sizes."""

from __future__ import annotations

import io
import tarfile

BLOCK = 512


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes | str,
    *,
    typeflag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_500_000_000,
    linkname: bytes | str = b"",
    devmajor: int = 0,
    devminor: int = 0,
    size_field: bytes | None = None,
    checksum_delta: int = 0,
) -> bytes:
    """One ustar header block. checksum_delta corrupts the stored checksum."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(linkname, str):
        linkname = linkname.encode()
    h = bytearray(BLOCK)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8)
    h[116:124] = octal(gid, 8)
    h[124:136] = size_field if size_field is not None else octal(size, 12)
    h[136:148] = octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:257] = linkname[:100].ljust(100, b"\0")
    h[257:265] = b"ustar\x0000"
    h[329:337] = octal(devmajor, 8)
    h[337:345] = octal(devminor, 8)
    csum = sum(h) + checksum_delta
    h[148:156] = b"%06o\0 " % (csum & 0o777777)
    return bytes(h)


def pax_records(records: dict[str, bytes | str]) -> bytes:
    out = b""
    for key, value in records.items():
        if isinstance(value, str):
            value = value.encode()
        body = b" " + key.encode() + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n = len(str(n).encode()) + len(body)
        out += str(n).encode() + body
    return out


def pax_header(records: dict[str, bytes | str] | bytes, name: str = "PaxHeader") -> bytes:
    body = records if isinstance(records, bytes) else pax_records(records)
    return header(name, typeflag=b"x", size=len(body)) + pad(body)


def file_entry(name: bytes | str, data: bytes = b"", **kw) -> bytes:
    return header(name, size=len(data), **kw) + pad(data)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


class Tar:
    """A tar stream built with tarfile (PAX format), for well-formed but hostile content."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Tar:
        info.mtime = 1_500_000_000
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, pax=None) -> Tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        if pax:
            info.pax_headers = pax
        return self._add(info, data)

    def dir(self, name: str, mode: int = 0o755) -> Tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        return self._add(info)

    def symlink(self, name: str, target: str, pax=None) -> Tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        if pax:
            info.pax_headers = pax
        return self._add(info)

    def hardlink(self, name: str, target: str) -> Tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        return self._add(info)

    def device(self, name: str, kind: bytes, major: int, minor: int, mode: int = 0o666) -> Tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.devmajor, info.devminor = major, minor
        info.mode = mode
        return self._add(info)

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()
