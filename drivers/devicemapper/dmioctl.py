"""The kernel's device-mapper, spoken through /dev/mapper/control ioctls.

Used by the devicemapper driver where the host has device-mapper (this machine has not: there
the driver runs on storagekit's own thin engine). It only builds and sends what Docker's
devicemapper driver sent through libdevmapper: create a device, load a thin-pool or thin
table, resume, suspend, send a pool message, read the status, remove (optionally deferred).
The byte layout follows include/uapi/linux/dm-ioctl.h (interface version 4).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections import namedtuple

DM_CONTROL = "/dev/mapper/control"
DM_VERSION = (4, 0, 0)  # major 4 is what matters; the kernel answers with its own
DM_NAME_LEN = 128
DM_UUID_LEN = 129
DM_MAX_TYPE_NAME = 16

# struct dm_ioctl: version[3], data_size, data_start, target_count, open_count, flags,
# event_nr, padding (u32 each), dev (u64), name[128], uuid[129], data[7]
_DM_IOCTL = struct.Struct(f"=3IIIIiIIIQ{DM_NAME_LEN}s{DM_UUID_LEN}s7s")
# struct dm_target_spec: sector_start, length (u64), status (s32), next (u32), type[16]
_TARGET_SPEC = struct.Struct(f"=QQiI{DM_MAX_TYPE_NAME}s")
# struct dm_target_msg: sector (u64), then the message
_TARGET_MSG = struct.Struct("=Q")

READONLY_FLAG = 1 << 0
SUSPEND_FLAG = 1 << 1
BUFFER_FULL_FLAG = 1 << 8  # the answer did not fit: ask again with a bigger buffer
DEFERRED_REMOVE = 1 << 17

# The buffer an answer is first asked into (libdevmapper's too); doubled while the kernel
# says it was too small, as libdevmapper does, up to a bound no table comes near.
ANSWER_BUFFER = 16384
MAX_ANSWER_BUFFER = 64 << 20


def _iowr(nr: int) -> int:
    # _IOWR(0xfd, nr, struct dm_ioctl)
    return (3 << 30) | (_DM_IOCTL.size << 16) | (0xFD << 8) | nr


CMD = {
    "version": _iowr(0),
    "remove_all": _iowr(1),
    "list_devices": _iowr(2),
    "dev_create": _iowr(3),
    "dev_remove": _iowr(4),
    "dev_rename": _iowr(5),
    "dev_suspend": _iowr(6),
    "dev_status": _iowr(7),
    "dev_wait": _iowr(8),
    "table_load": _iowr(9),
    "table_clear": _iowr(10),
    "table_deps": _iowr(11),
    "table_status": _iowr(12),
    "list_versions": _iowr(13),
    "target_msg": _iowr(14),
}


class Target(namedtuple("Target", "start length type params")):
    start: int  # sectors
    length: int  # sectors
    type: str
    params: str
    __slots__ = ()


def thin_pool_table(
    length_sectors: int,
    metadata_dev: str,
    data_dev: str,
    block_sectors: int,
    low_water_blocks: int,
    features: list[str] | None = None,
) -> Target:
    """`<start> <len> thin-pool <metadata dev> <data dev> <block size> <low water mark>
    [<#features> <feature>...]` (Documentation/admin-guide/device-mapper/thin-provisioning)."""
    if block_sectors < 128 or block_sectors > 2097152 or block_sectors % 128:
        raise ValueError("the data block size must be 128..2097152 sectors, a multiple of 128")
    feats = list(features or [])
    params = f"{metadata_dev} {data_dev} {block_sectors} {low_water_blocks}"
    if feats:
        params += f" {len(feats)} " + " ".join(feats)
    return Target(0, length_sectors, "thin-pool", params)


def thin_table(
    length_sectors: int, pool_dev: str, dev_id: int, external_origin: str | None = None
) -> Target:
    """`<start> <len> thin <pool dev> <dev id> [<external origin dev>]`."""
    if not 0 <= dev_id < 1 << 24:
        raise ValueError("thin device ids are 24-bit")
    params = f"{pool_dev} {dev_id}" + (f" {external_origin}" if external_origin else "")
    return Target(0, length_sectors, "thin", params)


def pack(
    name: str = "",
    uuid: str = "",
    flags: int = 0,
    dev: int = 0,
    payload: bytes = b"",
    target_count: int = 0,
    buffer: int = ANSWER_BUFFER,
) -> bytearray:
    """A dm_ioctl buffer: the header, then payload (targets or a message), with room for the
    kernel's answer (data_size covers the whole buffer)."""
    if len(name.encode()) >= DM_NAME_LEN or len(uuid.encode()) >= DM_UUID_LEN:
        raise ValueError("device-mapper names are < 128 bytes and uuids < 129")
    size = max(buffer, _DM_IOCTL.size + len(payload))
    buf = bytearray(size)
    _DM_IOCTL.pack_into(
        buf,
        0,
        *DM_VERSION,
        size,
        _DM_IOCTL.size,
        target_count,
        0,
        flags,
        0,
        0,
        dev,
        name.encode(),
        uuid.encode(),
        b"",
    )
    buf[_DM_IOCTL.size : _DM_IOCTL.size + len(payload)] = payload
    return buf


def targets_payload(targets: list[Target]) -> bytes:
    """dm_target_spec records, each followed by its NUL-terminated parameters and padded to
    8 bytes; `next` is the distance from one spec to the next."""
    out = bytearray()
    for t in targets:
        params = t.params.encode() + b"\0"
        body = _TARGET_SPEC.size + len(params)
        padded = (body + 7) & ~7
        out += _TARGET_SPEC.pack(t.start, t.length, 0, padded, t.type.encode())
        out += params + b"\0" * (padded - body)
    return bytes(out)


def message_payload(message: str, sector: int = 0) -> bytes:
    return _TARGET_MSG.pack(sector) + message.encode() + b"\0"


def unpack_header(buf: bytes) -> dict:
    f = _DM_IOCTL.unpack_from(buf, 0)
    return {
        "version": f[0:3],
        "data_size": f[3],
        "data_start": f[4],
        "target_count": f[5],
        "open_count": f[6],
        "flags": f[7],
        "event_nr": f[8],
        "dev": f[10],
        "name": f[11].split(b"\0", 1)[0].decode(),
        "uuid": f[12].split(b"\0", 1)[0].decode(),
    }


def unpack_status(buf: bytes) -> list[Target]:
    """The targets a TABLE_STATUS answer carries (each spec's `next` counts from the first
    spec, in answers)."""
    head = unpack_header(buf)
    start = head["data_start"]
    out, off = [], start
    for _ in range(head["target_count"]):
        s, length, _status, nxt, ttype = _TARGET_SPEC.unpack_from(buf, off)
        text = bytes(buf[off + _TARGET_SPEC.size :]).split(b"\0", 1)[0].decode()
        out.append(Target(s, length, ttype.split(b"\0", 1)[0].decode(), text))
        off = start + nxt
    return out


class KernelDm:
    """The ioctls Docker's driver needed, on the host's device-mapper."""

    def __init__(self) -> None:
        self.fd = os.open(DM_CONTROL, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def _call(self, cmd: str, buf: bytearray) -> bytearray:
        fcntl.ioctl(self.fd, CMD[cmd], buf, True)
        return buf

    def create(self, name: str, uuid: str = "") -> None:
        self._call("dev_create", pack(name, uuid))

    def load(self, name: str, targets: list[Target], readonly: bool = False) -> None:
        self._call(
            "table_load",
            pack(
                name,
                flags=READONLY_FLAG if readonly else 0,
                payload=targets_payload(targets),
                target_count=len(targets),
            ),
        )

    def resume(self, name: str) -> None:
        self._call("dev_suspend", pack(name))

    def suspend(self, name: str) -> None:
        self._call("dev_suspend", pack(name, flags=SUSPEND_FLAG))

    def message(self, name: str, message: str) -> None:
        self._call("target_msg", pack(name, payload=message_payload(message)))

    def status(self, name: str) -> list[Target]:
        return unpack_status(self._answer("table_status", name))

    def _answer(self, cmd: str, name: str) -> bytearray:
        """The kernel's answer to cmd about device `name`, in a buffer it fits in."""
        size = ANSWER_BUFFER
        while True:
            buf = self._call(cmd, pack(name, buffer=size))
            if not unpack_header(buf)["flags"] & BUFFER_FULL_FLAG:
                return buf
            if size >= MAX_ANSWER_BUFFER:
                raise OSError(errno.ENOBUFS, f"the answer to {cmd} does not fit "
                              f"{MAX_ANSWER_BUFFER >> 20} MiB", name)
            size *= 2

    def remove(self, name: str, deferred: bool = False) -> None:
        self._call("dev_remove", pack(name, flags=DEFERRED_REMOVE if deferred else 0))
