"""Directories deeper than PATH_MAX on the union engine, against kernel overlay.

The kernel refuses a path of 4,096 bytes or more, so an engine that opened a branch's
directory by its path from the branch root could not reach anything that deep. Both mounts
here are walked the way deep trees have to be: one name at a time, each directory opened
from its parent's descriptor (os functions with dir_fd).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storagekit import _native as n
from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def chain(depth: int, width: int = 211) -> list[str]:
    """Directory names whose path ("a/b/...") is exactly `depth` bytes."""
    count = depth // width
    names = [f"{i:03d}".ljust(width - 1, "d") for i in range(count)]
    rest = depth - (count * width - 1)  # bytes still missing after "a/.../z"
    if rest > 1:
        names.append("z" * (rest - 1))
    path = "/".join(names)
    assert len(path) == depth, (len(path), depth)
    return names


def walk_to(root: Path | int, names: list[str], *, make: bool = False) -> int:
    """A descriptor of root/names[0]/.../names[-1], opened (made) one name at a time."""
    fd = os.open(root, DIR) if not isinstance(root, int) else os.dup(root)
    try:
        for name in names:
            if make:
                os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def attempt(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        r = fn(*args, **kw)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return "ok" if r is None else r


def read_at(fd: int, name: str) -> bytes:
    f = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        return os.read(f, 1 << 16)
    finally:
        os.close(f)


def write_at(fd: int, name: str, data: bytes, flags: int = os.O_TRUNC) -> None:
    f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, 0o644, dir_fd=fd)
    try:
        os.write(f, data)
    finally:
        os.close(f)


class Mounts:
    """A union (engine, rw + lower) and an overlay (upper + the same lower) of one lower."""

    def __init__(self, base: Path, lower: Path):
        self.base, self.lower = base, lower
        self.rw, self.upper, self.work = base / "rw", base / "upper", base / "work"
        self.umnt, self.omnt = base / "union", base / "overlay"
        for d in (self.rw, self.upper, self.work, self.umnt, self.omnt):
            d.mkdir()
        self.up: set[Path] = set()

    def mount_union(self) -> Path:
        union.start(self.umnt, [self.rw, self.lower])
        self.up.add(self.umnt)
        return self.umnt

    def mount_overlay(self) -> Path:
        n.fsmount_overlay(str(self.omnt), [str(self.lower)], str(self.upper), str(self.work),
                          ["redirect_dir=on", "index=on"])
        self.up.add(self.omnt)
        return self.omnt

    def both(self) -> tuple[Path, Path]:
        return self.mount_union(), self.mount_overlay()

    def remount(self) -> tuple[Path, Path]:
        self.close()
        return self.both()

    def close(self) -> None:
        if self.umnt in self.up:
            union.stop(self.umnt)
        if self.omnt in self.up:
            n.umount_tree(str(self.omnt), detach=True)
        self.up.clear()


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    d = tmp_path / "lower"
    d.mkdir()
    return d


@pytest.fixture
def mounts(tmp_path: Path, lower: Path) -> Iterator[Mounts]:
    m = Mounts(tmp_path, lower)
    try:
        yield m
    finally:
        m.close()


def test_a_lower_directory_past_path_max_lists_reads_and_takes_new_entries(
        lower: Path, mounts: Mounts) -> None:
    names = chain(4221)
    fd = walk_to(lower, names, make=True)
    try:
        write_at(fd, "leaf", b"deep data")
        os.mkdir("sub", dir_fd=fd)
        sub = os.open("sub", DIR, dir_fd=fd)
        write_at(sub, "inner", b"inner")
        os.close(sub)
    finally:
        os.close(fd)

    def ops(root: Path) -> list[Any]:
        fd = walk_to(root, names)
        try:
            out = [sorted(os.listdir(fd)), attempt(read_at, fd, "leaf")]
            sub = os.open("sub", DIR, dir_fd=fd)
            out.append(sorted(os.listdir(sub)))
            out.append(attempt(read_at, sub, "inner"))
            os.close(sub)
            out.append(attempt(write_at, fd, "leaf", b"+more", os.O_APPEND))  # a copy-up
            out.append(attempt(read_at, fd, "leaf"))
            out.append(attempt(write_at, fd, "new", b"new"))
            out.append(attempt(os.mkdir, "newdir", dir_fd=fd))
            out.append(attempt(os.symlink, "leaf", "sym", dir_fd=fd))
            out.append(attempt(os.rename, "new", "renamed", src_dir_fd=fd, dst_dir_fd=fd))
            out.append(attempt(os.unlink, "sub/inner", dir_fd=fd))
            out.append(sorted(os.listdir(fd)))
            out.append(attempt(read_at, fd, "renamed"))
            return out
        finally:
            os.close(fd)

    u, o = mounts.both()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert ru[0] == ["leaf", "sub"] and ru[1] == b"deep data" and ru[5] == b"deep data+more"


def test_a_directory_made_past_path_max_through_the_union_lasts(mounts: Mounts) -> None:
    names = chain(4400)

    def make(root: Path) -> list[Any]:
        fd = walk_to(root, names, make=True)
        try:
            write_at(fd, "file", b"written deep")
            os.mkdir("d", dir_fd=fd)
            write_at(fd, "gone", b"to be removed")
            os.unlink("gone", dir_fd=fd)
            return [sorted(os.listdir(fd)), read_at(fd, "file")]
        finally:
            os.close(fd)

    def check_and_remove(root: Path) -> list[Any]:
        fd = walk_to(root, names)
        try:
            out = [sorted(os.listdir(fd)), attempt(read_at, fd, "file")]
            out.append(attempt(write_at, fd, "file", b"!", os.O_APPEND))
            out.append(attempt(read_at, fd, "file"))
            out.append(attempt(os.rmdir, "d", dir_fd=fd))
            out.append(attempt(os.unlink, "file", dir_fd=fd))
            out.append(sorted(os.listdir(fd)))
        finally:
            os.close(fd)
        # then the whole chain, bottom up
        for depth in range(len(names) - 1, -1, -1):
            parent = walk_to(root, names[:depth])
            try:
                out.append(attempt(os.rmdir, names[depth], dir_fd=parent))
            finally:
                os.close(parent)
        out.append(sorted(os.listdir(root)))
        return out

    u, o = mounts.both()
    made = (make(u), make(o))
    assert made[0] == made[1] == [["d", "file"], b"written deep"]
    u, o = mounts.remount()
    ru, ro = check_and_remove(u), check_and_remove(o)
    assert ru == ro
    assert ru[:4] == [["d", "file"], b"written deep", "ok", b"written deep!"]
    assert ru[6] == ru[-1] == [] and set(ru[4:6] + ru[7:-1]) == {"ok"}


def test_rmdir_right_after_mkdir_of_a_path_just_under_path_max(mounts: Mounts) -> None:
    """The longest path the kernel takes (4,095 bytes), from a working directory inside the
    mount as a test suite has it: from the branch root that directory is deeper still."""
    names = chain(4095)
    path = "/".join(names)

    def ops(root: Path) -> list[Any]:
        (root / "work").mkdir()
        fd = os.open(root / "work", DIR)
        try:
            out = [attempt(os.mkdir, "/".join(names[:i]), dir_fd=fd)
                   for i in range(1, len(names) + 1)]
            out.append(attempt(os.rmdir, path, dir_fd=fd))
            out.append(attempt(os.mkdir, path, dir_fd=fd))
            out.append(attempt(os.rmdir, path, dir_fd=fd))
            out.append(attempt(os.stat, path, dir_fd=fd))
            return out
        finally:
            os.close(fd)

    u, o = mounts.both()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert ru[-1] == "ENOENT" and set(ru[:-1]) == {"ok"}


def test_hardlinks_past_path_max_stay_linked_across_copy_up(lower: Path, mounts: Mounts) -> None:
    """A copy-up links the file's other names in the union to the copy; finding those names
    walks the whole branch, past PATH_MAX too."""
    names = chain(4300)
    fd = walk_to(lower, names, make=True)
    try:
        write_at(fd, "h1", b"linked")
        os.link("h1", "h2", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)

    def ops(root: Path) -> list[Any]:
        fd = walk_to(root, names)
        try:
            write_at(fd, "h1", b"+appended", os.O_APPEND)
            a, b = os.stat("h1", dir_fd=fd), os.stat("h2", dir_fd=fd)
            return [read_at(fd, "h2"), a.st_ino == b.st_ino, a.st_nlink, b.st_nlink]
        finally:
            os.close(fd)

    def check(root: Path) -> list[Any]:
        fd = walk_to(root, names)
        try:
            a, b = os.stat("h1", dir_fd=fd), os.stat("h2", dir_fd=fd)
            return [read_at(fd, "h1"), read_at(fd, "h2"), a.st_ino == b.st_ino]
        finally:
            os.close(fd)

    u, o = mounts.both()
    ru, ro = ops(u), ops(o)
    assert ru == ro
    assert ru == [b"linked+appended", True, 2, 2]
    # the writable branch holds both names as links of the copy: the next mount shows them
    u, o = mounts.remount()
    assert check(u) == check(o) == [b"linked+appended", b"linked+appended", True]
