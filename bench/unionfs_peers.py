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

from storagekit import _native, unionfs

CONTENDERS = ["storagekit", "kernel overlay", "fuse-overlayfs", "unionfs-fuse"]
TOOLS = {"fuse-overlayfs": "fuse-overlayfs", "unionfs-fuse": "unionfs"}


def available(name: str) -> bool:
    tool = TOOLS.get(name)
    return tool is None or shutil.which(tool) is not None


class Union:
    """One mounted union: lowers (top first) under a fresh upper dir, on `mnt`."""

    def __init__(self, name: str, lowers: list[Path], work: Path, volatile: bool = False):
        self.name, self.lowers, self.work = name, lowers, work
        self.upper, self.wd, self.mnt = work / "upper", work / "work", work / "mnt"
        self.volatile = volatile

    def mount(self) -> Path:
        for d in (self.upper, self.wd):
            if d.exists():
                subprocess.run(["rm", "-rf", str(d)], check=True)
            d.mkdir(parents=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        low = [str(p) for p in self.lowers]
        if self.name == "storagekit":
            unionfs.start(self.mnt, [str(self.upper), *low])
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
            unionfs.stop(self.mnt)
        elif self.name == "kernel overlay":
            _native.umount(str(self.mnt))
        else:
            subprocess.run(["fusermount3" if self.name == "fuse-overlayfs" else "fusermount",
                            "-u", str(self.mnt)], check=True)
            deadline = time.monotonic() + 10  # the daemon lets go of the branches
            while _native.is_mountpoint(str(self.mnt)) and time.monotonic() < deadline:
                time.sleep(0.01)


def drop_caches() -> None:
    """Write back dirty data and drop the page, dentry and inode caches (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
