"""Mount the same layers with each union filesystem the benchmarks compare: storagekit's
engine, the kernel's overlayfs, fuse-overlayfs and unionfs-fuse (Debian packages).

Every contender gets the same read-only lower directories (plain trees: no whiteouts, so all
four read them alike) and its own empty upper directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from storagekit import _native
from storagekit.engines import union

CONTENDERS = ["storagekit", "kernel overlay", "fuse-overlayfs", "unionfs-fuse"]
TOOLS = {"fuse-overlayfs": "fuse-overlayfs", "unionfs-fuse": "unionfs"}


def available(name: str) -> bool:
    tool = TOOLS.get(name)
    return tool is None or shutil.which(tool) is not None


class Union:
    """One mounted union: lowers (top first) under a fresh upper dir, on `mnt`.

    Every mount() gets new upper and work directories; cleanup() deletes them all. Deleting
    the last round's upper just before the next round would tax that round: on ext4, a file
    created soon after many deletions pays for a search past the freed inodes."""

    def __init__(self, name: str, lowers: list[Path], work: Path, volatile: bool = False):
        self.name, self.lowers, self.work = name, lowers, work
        self.mnt = work / "mnt"
        self.volatile = volatile
        self.rounds = 0

    def mount(self) -> Path:
        self.rounds += 1
        self.upper = self.work / f"upper-{self.rounds}"
        self.wd = self.work / f"work-{self.rounds}"
        for d in (self.upper, self.wd):
            d.mkdir(parents=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        low = [str(p) for p in self.lowers]
        if self.name == "storagekit":
            union.start(self.mnt, [str(self.upper), *low])
        elif self.name == "kernel overlay":
            opts = ["index=off"] + (["volatile"] if self.volatile else [])
            _native.fsmount_overlay(str(self.mnt), low, str(self.upper), str(self.wd), opts)
        elif self.name == "fuse-overlayfs":
            subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={':'.join(low)},"
                            f"upperdir={self.upper},workdir={self.wd}", str(self.mnt)],
                           check=True)
        elif self.name == "unionfs-fuse":
            branches = ":".join([f"{self.upper}=RW"] + [f"{p}=RO" for p in low])
            subprocess.run(["unionfs", "-o", "cow,allow_other,use_ino,suid,dev,nonempty",
                            branches, str(self.mnt)], check=True)
        else:
            raise ValueError(self.name)
        return self.mnt

    def unmount(self) -> None:
        if self.name == "storagekit":
            union.stop(self.mnt)
        elif self.name == "kernel overlay":
            _native.umount(str(self.mnt))
        else:
            subprocess.run(["fusermount3" if self.name == "fuse-overlayfs" else "fusermount",
                            "-u", str(self.mnt)], check=True)
            deadline = time.monotonic() + 10  # the daemon lets go of the branches
            while _native.is_mountpoint(str(self.mnt)) and time.monotonic() < deadline:
                time.sleep(0.01)


    def cleanup(self) -> None:
        """Delete every round's upper and work directories (after unmount)."""
        for n in range(1, self.rounds + 1):
            for d in (self.work / f"upper-{n}", self.work / f"work-{n}"):
                if d.exists():
                    subprocess.run(["rm", "-rf", str(d)], check=True)
        os.sync()


def drop_caches() -> None:
    """Write back dirty data and drop the page, dentry and inode caches (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
