"""The changes of a layer against the parent it is a snapshot of, from what btrfs knows.

A snapshot shares its parent's tree; every inode the layer changes after the snapshot gets
its inode item rewritten with the transaction's id (inode.transid). So a tree search of the
layer's subvolume for leaves written after the snapshot's creation (otransid), keeping inode
items whose transid is newer (what `btrfs subvolume find-new` does for file extents), gives
every changed inode; their parent directories (inode refs, walked up to the root) are the
only directories whose contents can differ. The tree walk then visits those directories only
and compares each entry the way storagekit._native.changes does (type, mode, owner, rdev,
xattrs, size and mtime for non-directories, symlink targets; a directory holding a change is
listed as modified), so the result is the same list, and so the export is the same bytes.

An entry whose inode is unchanged and the same in both trees is equal without a look:
renames, links and deletions rewrite the inodes and directories they touch.
"""

from __future__ import annotations

import os
import stat
import struct

from storagekit import _native

from . import ioctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_U64_MAX = (1 << 64) - 1
# struct btrfs_inode_item: generation u64, transid u64, size, nbytes, block_group u64,
# nlink u32 (at 40), uid, gid u32, mode u32 (at 52), ...
_INODE = struct.Struct("=8xQ24xI8xI")
MODIFY, ADD, DELETE = _native.CHANGE_MODIFY, _native.CHANGE_ADD, _native.CHANGE_DELETE


def _ref_parents(typ: int, offset: int, data: bytes) -> list[int]:
    """The directories an inode ref item names the inode in."""
    if typ == ioctl.INODE_REF_KEY:
        return [offset]  # the key's offset is the directory
    out, pos = [], 0
    while pos + 18 <= len(data):  # extref: u64 parent, u64 index, u16 name_len, name
        parent, _, name_len = struct.unpack_from("=QQH", data, pos)
        out.append(parent)
        pos += 18 + name_len
    return out


def changed_inodes(layer: str, since: int) -> tuple[dict[int, int], dict[int, set[int]]]:
    """({inode: mode}, {inode: its directories}) of the inodes of subvolume `layer` written
    after transaction `since`. A changed inode's ref items sit beside its inode item (keys
    (ino, 1, 0), then (ino, 12, dir)), mostly in the same leaf, so the one search finds them;
    they are given only for inodes with one name whose ref was seen (one that straddles into
    an older leaf, or a second link, is looked up by parent_dirs)."""
    modes: dict[int, int] = {}
    single: set[int] = set()
    dirs: dict[int, set[int]] = {}
    for _, objectid, typ, offset, data in ioctl.tree_search(
            layer, 0, (ioctl.FIRST_FREE_OBJECTID, 0, 0), (_U64_MAX, 255, _U64_MAX),
            min_transid=since + 1):
        if typ == ioctl.INODE_ITEM_KEY:
            transid, nlink, mode = _INODE.unpack_from(data)
            if transid > since:
                modes[objectid] = mode
                if nlink == 1:
                    single.add(objectid)
        elif typ in (ioctl.INODE_REF_KEY, ioctl.INODE_EXTREF_KEY) and objectid in single:
            dirs.setdefault(objectid, set()).update(_ref_parents(typ, offset, data))
    for ino, found in dirs.items():
        found.discard(ino)  # the root directory's ref names itself
    return modes, dirs


def parent_dirs(layer: str, inode: int) -> set[int]:
    """The directories that hold a name of `inode` (several for a hard-linked file)."""
    out = set()
    for _, _, typ, offset, data in ioctl.tree_search(
            layer, 0, (inode, ioctl.INODE_REF_KEY, 0), (inode, ioctl.INODE_EXTREF_KEY, _U64_MAX)):
        out.update(_ref_parents(typ, offset, data))
    out.discard(inode)
    return out


def dirty_directories(layer: str, changed: dict[int, int],
                      known: dict[int, set[int]] | None = None) -> set[int]:
    """The directories whose subtree holds a changed inode (changed ones included).
    `known`: the directories of some inodes already (changed_inodes' second result); the
    others' are looked up."""
    known = known or {}
    dirty = {ino for ino, mode in changed.items() if stat.S_ISDIR(mode)}
    todo = list(changed)
    seen: set[int] = set()
    while todo:
        ino = todo.pop()
        if ino in seen:
            continue
        seen.add(ino)
        parents = known.get(ino)
        for parent in parents if parents is not None else parent_dirs(layer, ino):
            dirty.add(parent)
            todo.append(parent)
    return dirty


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _same_mtime(a: int, b: int) -> bool:
    # tar keeps whole seconds: a file extracted from one still compares equal
    sa, na = divmod(a, 1_000_000_000)
    sb, nb = divmod(b, 1_000_000_000)
    return sa == sb and (na == nb or na == 0 or nb == 0)


def _differs(lpath: str, ppath: str, ls: os.stat_result, ps: os.stat_result) -> bool:
    if (ls.st_mode, ls.st_uid, ls.st_gid, ls.st_rdev) != (ps.st_mode, ps.st_uid, ps.st_gid,
                                                           ps.st_rdev):
        return True
    if not stat.S_ISDIR(ls.st_mode) and (
            ls.st_size != ps.st_size or not _same_mtime(ls.st_mtime_ns, ps.st_mtime_ns)
            or ls.st_nlink != ps.st_nlink):  # a new link names the file: the native rule
        return True
    if _xattrs(lpath) != _xattrs(ppath):
        return True
    return stat.S_ISLNK(ls.st_mode) and os.readlink(lpath) != os.readlink(ppath)


class _Scan:
    def __init__(self, layer: str, parent: str, changed: dict[int, int], dirty: set[int]):
        self.layer, self.parent = layer, parent
        self.changed, self.dirty = changed, dirty
        self.out: list[tuple[str, int]] = []

    def compare_dirs(self, rel: str) -> bool:
        before = len(self.out)
        lnames = set(os.listdir(self.layer + rel or "/"))
        pnames = set(os.listdir(self.parent + rel or "/"))
        self.both_empty = not lnames and not pnames
        for name in pnames - lnames:
            self.out.append((f"{rel}/{name}", DELETE))
        for name in lnames - pnames:
            self._add_tree(f"{rel}/{name}")
        for name in lnames & pnames:
            self._compare(f"{rel}/{name}")
        return len(self.out) > before

    def _add_tree(self, rel: str) -> None:
        self.out.append((rel, ADD))
        path = self.layer + rel
        if stat.S_ISDIR(os.lstat(path).st_mode):
            self.out += [(rel + p, k) for p, k in _native.changes(path, None)]

    def _compare(self, rel: str) -> None:
        lpath, ppath = self.layer + rel, self.parent + rel
        ls, ps = os.lstat(lpath), os.lstat(ppath)
        is_dir = stat.S_ISDIR(ls.st_mode)
        if ls.st_ino == ps.st_ino and ls.st_ino not in self.changed and (
                not is_dir or ls.st_ino not in self.dirty):
            return  # the same inode, untouched since the snapshot, nothing changed below
        modified = _differs(lpath, ppath, ls, ps)
        if modified:
            self.out.append((rel, MODIFY))
        if not is_dir:
            return
        if stat.S_ISDIR(ps.st_mode):
            inside = self.compare_dirs(rel)
            # an empty directory removed and made again (`rmdir d; mkdir d`) shows only in
            # its mtime: a change, as the native scan has it (only when both are empty)
            if (self.both_empty and not modified and not inside
                    and not _same_mtime(ls.st_mtime_ns, ps.st_mtime_ns)):
                self.out.append((rel, MODIFY))
                return
        else:
            found = _native.changes(lpath, None)
            self.out += [(rel + p, k) for p, k in found]
            inside = bool(found)
        if inside and not modified:
            self.out.append((rel, MODIFY))


def scan(layer: str, parent: str, since: int) -> list[tuple[str, int]]:
    """The changes of subvolume `layer` against subvolume `parent`, of which it is a
    snapshot made in transaction `since` (the parent unchanged since): as
    _native.changes(layer, parent) gives them, sorted by path."""
    ioctl.sync(layer)  # inode updates reach the trees at a commit
    changed, dirs = changed_inodes(layer, since)
    if not changed:
        return []
    s = _Scan(layer, parent, changed, dirty_directories(layer, changed, dirs))
    s.compare_dirs("")
    s.out.sort(key=lambda c: os.fsencode(c[0]))  # bytewise, as the native scan sorts
    return s.out


def paths(changes: Iterable[tuple[str, int]]) -> list[str]:
    return [p for p, k in changes if k != DELETE]
