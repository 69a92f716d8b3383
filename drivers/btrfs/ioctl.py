"""The btrfs ioctls the driver needs, through fcntl.ioctl (each is one fixed-size struct).

Structures and numbers are those of linux/btrfs.h (ioctl magic 0x94). Every function takes
paths and raises OSError with the errno and the path the kernel refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

_MAGIC = 0x94
_W, _R = 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


VOL_ARGS_SIZE = 4096  # struct btrfs_ioctl_vol_args: s64 fd; char name[4088]
VOL_ARGS_V2_SIZE = 4096  # struct btrfs_ioctl_vol_args_v2 (fd, transid, flags, unused[4], name)
SUBVOL_INFO_SIZE = 504  # struct btrfs_ioctl_get_subvol_info_args
SEARCH_ARGS_SIZE = 4096  # struct btrfs_ioctl_search_args: key (104 bytes) + buf

IOC_SYNC = _ioc(0, 8, 0)
IOC_SUBVOL_CREATE = _ioc(_W, 14, VOL_ARGS_SIZE)
IOC_SNAP_DESTROY = _ioc(_W, 15, VOL_ARGS_SIZE)
IOC_TREE_SEARCH = _ioc(_W | _R, 17, SEARCH_ARGS_SIZE)
IOC_SNAP_CREATE_V2 = _ioc(_W, 23, VOL_ARGS_V2_SIZE)
IOC_SUBVOL_GETFLAGS = _ioc(_R, 25, 8)
IOC_SUBVOL_SETFLAGS = _ioc(_W, 26, 8)
IOC_QUOTA_CTL = _ioc(_W | _R, 40, 16)
IOC_QGROUP_CREATE = _ioc(_W, 42, 16)
IOC_QGROUP_LIMIT = _ioc(_R, 43, 48)
IOC_GET_SUBVOL_INFO = _ioc(_R, 60, SUBVOL_INFO_SIZE)

SUBVOL_RDONLY = 1 << 1  # in the ioctls' flags
ROOT_SUBVOL_RDONLY = 1 << 0  # in the root item's flags (GET_SUBVOL_INFO)
QUOTA_CTL_ENABLE = 1
QGROUP_LIMIT_MAX_RFER = 1 << 0
FIRST_FREE_OBJECTID = 256  # the root directory of every subvolume
ROOT_TREE_OBJECTID = 1

# item types (the middle of a btrfs key)
INODE_ITEM_KEY = 1
INODE_REF_KEY = 12
INODE_EXTREF_KEY = 13
ROOT_ITEM_KEY = 132

_NAME_MAX = 4087  # the name field less its terminating NUL
_SEARCH_KEY = struct.Struct("=7Q4I4Q")
_SEARCH_HEADER = struct.Struct("=3Q2I")
_U64_MAX = (1 << 64) - 1


@contextlib.contextmanager
def _open(path: str, flags: int = os.O_RDONLY | os.O_DIRECTORY) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _call(fd: int, request: int, arg: bytes | bytearray | int, path: str) -> bytes:
    """The ioctl; returns the argument struct as the kernel left it. (fcntl copies an
    immutable argument into a buffer of 1 KiB at most: structs are passed mutable.)"""
    buf = arg if isinstance(arg, int) else bytearray(arg)
    try:
        fcntl.ioctl(fd, request, buf)
    except OSError as e:
        raise OSError(e.errno, os.strerror(e.errno or 0), path) from None
    return b"" if isinstance(buf, int) else bytes(buf)


def _name(name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or len(raw) > _NAME_MAX:
        raise OSError(22, "not a subvolume name", name)
    return raw


def _split(path: str) -> tuple[str, bytes]:
    head, _, tail = os.path.abspath(path).rpartition("/")
    return head or "/", _name(tail)


def create_subvolume(path: str) -> None:
    """A new empty subvolume at path (its directory must not exist)."""
    parent, name = _split(path)
    with _open(parent) as fd:
        _call(fd, IOC_SUBVOL_CREATE, struct.pack("=q4088s", 0, name), path)


def snapshot(source: str, path: str, readonly: bool = False) -> None:
    """A snapshot of subvolume source at path: O(1), the trees are shared until written."""
    parent, name = _split(path)
    with _open(source) as src, _open(parent) as fd:
        flags = SUBVOL_RDONLY if readonly else 0
        # fd, transid, flags, unused[4], name[4040]
        arg = struct.pack("=qQQ4Q4040s", src, 0, flags, 0, 0, 0, 0, name)
        _call(fd, IOC_SNAP_CREATE_V2, arg, path)


def delete_subvolume(path: str) -> None:
    """Delete the subvolume at path (root may delete a read-only one; it must hold no
    other subvolume)."""
    parent, name = _split(path)
    with _open(parent) as fd:
        _call(fd, IOC_SNAP_DESTROY, struct.pack("=q4088s", 0, name), path)


def is_readonly(path: str) -> bool:
    with _open(path) as fd:
        raw = _call(fd, IOC_SUBVOL_GETFLAGS, bytes(8), path)
    return bool(struct.unpack("=Q", raw)[0] & SUBVOL_RDONLY)


def set_readonly(path: str, readonly: bool) -> None:
    """Set or clear the subvolume's ro property (what `btrfs property set ro` does)."""
    with _open(path) as fd:
        raw = _call(fd, IOC_SUBVOL_GETFLAGS, bytes(8), path)
        flags = struct.unpack("=Q", raw)[0]
        flags = flags | SUBVOL_RDONLY if readonly else flags & ~SUBVOL_RDONLY
        _call(fd, IOC_SUBVOL_SETFLAGS, struct.pack("=Q", flags), path)


class SubvolInfo:
    """What BTRFS_IOC_GET_SUBVOL_INFO says of a subvolume."""

    def __init__(self, raw: bytes) -> None:
        # u64 treeid; char name[256]; u64 parent_id, dirid, generation, flags;
        # u8 uuid[16], parent_uuid[16], received_uuid[16]; u64 ctransid, otransid, ...
        self.id = struct.unpack_from("=Q", raw, 0)[0]
        self.generation, self.flags = struct.unpack_from("=2Q", raw, 280)
        self.uuid = raw[296:312].hex()
        self.parent_uuid = raw[312:328].hex()
        self.ctransid, self.otransid = struct.unpack_from("=2Q", raw, 344)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & ROOT_SUBVOL_RDONLY)


def subvolume_info(path: str) -> SubvolInfo:
    with _open(path) as fd:
        return SubvolInfo(_call(fd, IOC_GET_SUBVOL_INFO, bytes(SUBVOL_INFO_SIZE), path))


def sync(path: str) -> None:
    """Commit the filesystem's transaction: what tree searches read is then complete (inode
    updates wait in memory, outside the trees, until a commit)."""
    with _open(path) as fd:
        _call(fd, IOC_SYNC, 0, path)


def tree_search(path: str, tree_id: int, min_key: tuple[int, int, int],
                max_key: tuple[int, int, int], min_transid: int = 0
                ) -> Iterator[tuple[int, int, int, int, bytes]]:
    """Items (transid of their leaf, objectid, type, offset, data) of tree tree_id (0: the
    tree of the subvolume holding path) with keys in [min_key, max_key] (keys compare as
    (objectid, type, offset) tuples), skipping leaves not written since min_transid."""
    lo = list(min_key)
    with _open(path) as fd:
        while True:
            key = _SEARCH_KEY.pack(tree_id, lo[0], max_key[0], lo[2], max_key[2],
                                   min_transid, _U64_MAX, lo[1], max_key[1], 4096, 0,
                                   0, 0, 0, 0)
            buf = bytearray(SEARCH_ARGS_SIZE)
            buf[:len(key)] = key
            buf = bytearray(_call(fd, IOC_TREE_SEARCH, buf, path))
            nr = struct.unpack_from("=I", buf, 64)[0]
            if nr == 0:
                return
            pos = _SEARCH_KEY.size
            last = (0, 0, 0)
            for _ in range(nr):
                transid, objectid, offset, typ, length = _SEARCH_HEADER.unpack_from(buf, pos)
                pos += _SEARCH_HEADER.size
                yield transid, objectid, typ, offset, bytes(buf[pos:pos + length])
                pos += length
                last = (objectid, typ, offset)
            # the next key after the last one returned
            if last[2] < _U64_MAX:
                lo = [last[0], last[1], last[2] + 1]
            elif last[1] < 255:
                lo = [last[0], last[1] + 1, 0]
            elif last[0] < _U64_MAX:
                lo = [last[0] + 1, 0, 0]
            else:
                return
            if tuple(lo) > max_key:
                return


def enable_quota(path: str) -> None:
    """Turn quota groups on for the filesystem holding path (a no-op when they are on)."""
    with _open(path) as fd:
        _call(fd, IOC_QUOTA_CTL, struct.pack("=QQ", QUOTA_CTL_ENABLE, 0), path)


def quota_enabled(path: str) -> bool:
    """Are quota groups on? (the quota tree, id 8, has its root item in the root tree)."""
    return any(True for _ in tree_search(path, ROOT_TREE_OBJECTID, (8, ROOT_ITEM_KEY, 0),
                                         (8, ROOT_ITEM_KEY, _U64_MAX)))


def limit_qgroup(path: str, max_referenced: int) -> None:
    """Limit the level-0 qgroup of the subvolume at path to max_referenced bytes (0: no
    limit). qgroupid 0 in the call means the subvolume of the file descriptor."""
    flags = QGROUP_LIMIT_MAX_RFER if max_referenced else 0
    with _open(path) as fd:
        _call(fd, IOC_QGROUP_LIMIT,
              struct.pack("=6Q", 0, flags, max_referenced, 0, 0, 0), path)


def destroy_qgroup(mountpoint: str, subvolume_id: int) -> None:
    """Drop the level-0 qgroup of a deleted subvolume (kernels since 6.x drop it themselves
    once the subvolume's tree is gone: ENOENT or EBUSY then is not an error)."""
    with _open(mountpoint) as fd:
        with contextlib.suppress(OSError):
            _call(fd, IOC_QGROUP_CREATE, struct.pack("=QQ", 0, subvolume_id), mountpoint)


IOC_SPACE_INFO = _ioc(_W | _R, 20, 16)
_SPACE_KINDS = ((1 << 0, "Data"), (1 << 2, "Metadata"), (1 << 1, "System"))


def space_info(path: str) -> list[tuple[str, int, int]]:
    """(kind, total bytes, used bytes) of the filesystem's data, metadata and system block
    groups (what `btrfs filesystem df` shows), each kind summed over its profiles."""
    slots = 16
    buf = bytearray(16 + 24 * slots)
    struct.pack_into("=QQ", buf, 0, slots, 0)
    with _open(path) as fd:
        try:
            fcntl.ioctl(fd, IOC_SPACE_INFO, buf)
        except OSError as e:
            raise OSError(e.errno, os.strerror(e.errno or 0), path) from None
    n = min(struct.unpack_from("=Q", buf, 8)[0], slots)
    totals: dict[str, list[int]] = {}
    for i in range(n):
        flags, total, used = struct.unpack_from("=3Q", buf, 16 + 24 * i)
        for bit, kind in _SPACE_KINDS:
            if flags & bit:
                t = totals.setdefault(kind, [0, 0])
                t[0] += total
                t[1] += used
                break
    return [(kind, *totals[kind]) for _, kind in _SPACE_KINDS if kind in totals]
