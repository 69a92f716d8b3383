"""Inode numbers of the union engine against kernel overlay's: the same on every mount of
the same branches, and kept by a file or directory that is copied up.

Overlay (xino, index=on) derives st_ino from the real inode and keeps it across copy-up
through its origin records; the engine derives it from the real inode and the place of its
filesystem among the branches'.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from unionutil import Stacks

from storagekit import _native as n
from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")


def inos(root: Path) -> dict[str, int]:
    out = {"/": os.lstat(root).st_ino}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out["/" + str(p.relative_to(root))] = os.lstat(p).st_ino
    return out


class Remountable:
    """The union and the overlay of one set of layers, mounted again and again on the same
    branches (the same writable branch / upper included)."""

    def __init__(self, stacks: Stacks, base: Path):
        self.ubranches = [base / "rw", *stacks.lowers("oci")]
        self.olowers = [str(p) for p in stacks.lowers("overlay")]
        self.upper, self.work = base / "upper", base / "work"
        self.umnt, self.omnt = base / "umnt", base / "omnt"
        for d in (self.ubranches[0], self.upper, self.work, self.umnt, self.omnt):
            d.mkdir()
        self.up = False

    def mount(self) -> tuple[Path, Path]:
        union.start(self.umnt, self.ubranches)
        try:
            n.fsmount_overlay(str(self.omnt), self.olowers, str(self.upper), str(self.work),
                              ["redirect_dir=on", "index=on"])
        except BaseException:
            union.stop(self.umnt)
            raise
        self.up = True
        return self.umnt, self.omnt

    def unmount(self) -> None:
        if self.up:
            union.stop(self.umnt)
            n.umount_tree(str(self.omnt), detach=True)
            self.up = False


def test_inode_numbers_are_the_same_on_the_next_mount(stacks: Stacks, tmp_path: Path) -> None:
    base = tmp_path / "r"
    base.mkdir()
    r = Remountable(stacks, base)
    try:
        u, o = r.mount()
        before = inos(u), inos(o)
        # the union's numbers are its own, distinct for distinct entries outside hardlinks
        assert len(set(before[0].values())) == len(set(before[1].values()))
        r.unmount()
        u, o = r.mount()
        # met in another order this time: numbers handed out in order would differ
        for root in (u, o):
            for p in sorted(before[0], reverse=True):
                os.lstat(str(root) + p)
        after = inos(u), inos(o)
        assert after[1] == before[1]  # overlay's
        assert after[0] == before[0]
    finally:
        r.unmount()


def test_inode_numbers_stay_across_copy_up_and_new_entries_across_remount(
        stacks: Stacks, tmp_path: Path) -> None:
    base = tmp_path / "r"
    base.mkdir()
    r = Remountable(stacks, base)
    lower_files = ["/etc/hosts", "/bin/tool", "/var/lib/data.bin", "/tree/sub/leaf"]
    lower_dirs = ["/usr/share", "/var/lib", "/tree/sub"]
    try:
        results = []
        for root in r.mount():
            before = inos(root)
            with open(root / "etc/hosts", "ab") as f:  # data copy-up
                f.write(b"::1 localhost\n")
            os.chmod(root / "bin/tool", 0o700)  # metadata copy-up
            os.truncate(root / "var/lib/data.bin", 10)
            os.utime(root / "tree/sub/leaf")
            os.chmod(root / "usr/share", 0o700)  # a directory copied up
            os.mkdir(root / "var/lib/newdir")  # copies its parents up
            (root / "fresh").write_bytes(b"fresh")
            (root / "freshdir").mkdir()
            (root / "freshdir/inner").write_bytes(b"inner")
            after = inos(root)
            results.append(([before[p] for p in lower_files + lower_dirs],
                             [after[p] for p in lower_files + lower_dirs]))
            results.append(after)
        (ub, ua), uafter, (ob, oa), oafter = results
        assert oa == ob
        assert ua == ub
        r.unmount()
        u, o = r.mount()
        new = ["/fresh", "/freshdir", "/freshdir/inner", "/var/lib/newdir"]
        untouched = ["/etc/passwd", "/opq/new1", "/dev/null", "/link"]
        again_u, again_o = inos(u), inos(o)
        assert [again_o[p] for p in new + untouched] == [oafter[p] for p in new + untouched]
        assert [again_u[p] for p in new + untouched] == [uafter[p] for p in new + untouched]
    finally:
        r.unmount()
