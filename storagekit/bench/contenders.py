"""Who is measured: the four drivers, and the baselines every figure stands beside.

Every contender offers the same four operations, so one workload measures them all alike:
an image layer made from a tree (on a parent image or not), a container (a writable layer on
an image, mounted), releasing a container, and the base's files changed in place.

  driver NAME      a storagekit driver (vfs, overlay, aufs, devicemapper), through its API
  host fs          no layering at all: an image is a directory, a container a full copy of
                   it (cp -a, no reflink) - what every layered store is measured against
  kernel overlay   the kernel's overlayfs mounted directly (fsopen/fsmount), no storagekit
  fuse-overlayfs   the FUSE overlay rootless runtimes use (a Debian package)
  ctr run          containerd booting the same busybox (boots only: ctrbase.py)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from .. import _native, registry
from ..errors import StorageError

HOST = "host fs"
KERNEL_OVERLAY = "kernel overlay"
FUSE_OVERLAYFS = "fuse-overlayfs"
CTR_RUN = "ctr run"
BASELINES = (HOST, KERNEL_OVERLAY, FUSE_OVERLAYFS, CTR_RUN)


def rm_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount left below path."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def fill(dst: str | Path, tree: Path) -> None:
    """Copy tree into dst as dst/<tree's name>: a real copy (no reflink), so every contender
    holds its own data."""
    _native.copy_tree(str(tree), os.path.join(dst, tree.name), reflink=False)


class Contender:
    """One of the contenders above; `home` holds everything it writes."""

    name: str
    kind: str  # "driver" or "baseline"
    #: only container boots are measured (ctr run: containerd's snapshots are not paths the
    #: other workloads could use)
    boots_only = False

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.images: dict[str, str | None] = {}  # image id -> parent image id

    def image(self, iid: str, trees: list[Path], parent: str | None = None) -> None:
        """An image layer holding each tree as /<tree's name>, on parent."""
        raise NotImplementedError

    def container(self, cid: str, iid: str) -> str:
        raise NotImplementedError

    def release(self, cid: str) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def base_files(self, iid: str) -> Iterator[str]:
        """The image's own files, writable in place (what an upgrade of the base changes)."""
        raise NotImplementedError
        yield ""

    def options(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        """Release everything still made, and delete the home."""


class DriverContender(Contender):
    kind = "driver"

    def __init__(self, home: Path, name: str, options: dict[str, str] | None = None) -> None:
        super().__init__(home)
        self.name = name
        self.driver = registry.driver_class(name)(home / "driver", options)
        self.live: list[str] = []

    def image(self, iid: str, trees: list[Path], parent: str | None = None) -> None:
        # made writable, filled, then committed: how an image layer is made from a tree
        self.driver.create_rw(iid, parent)
        path = self.driver.get(iid)
        try:
            for tree in trees:
                fill(path, tree)
        finally:
            self.driver.put(iid)
        self.driver.commit(iid)
        self.images[iid] = parent

    def container(self, cid: str, iid: str) -> str:
        self.driver.create_rw(cid, iid)
        self.live.append(cid)
        return self.driver.get(cid)

    def release(self, cid: str) -> None:
        self.driver.put(cid)
        self.driver.remove(cid)
        self.live.remove(cid)

    @contextlib.contextmanager
    def base_files(self, iid: str) -> Iterator[str]:
        with self.driver._writable(iid) as path:
            yield path

    def options(self) -> dict[str, str]:
        opts = dict(self.driver.options)
        opts.update(self.driver.on_disk_options())
        return opts

    def close(self) -> None:
        for cid in list(self.live):
            with contextlib.suppress(StorageError, OSError):
                self.release(cid)
        with contextlib.suppress(StorageError, OSError):
            self.driver.cleanup()
        for iid in reversed(list(self.images)):
            with contextlib.suppress(StorageError, OSError):
                self.driver.remove(iid)
        _native.umount_tree(str(self.home), detach=True)
        rm_tree(self.home)


class _DirImages(Contender):
    """Baselines whose images are plain directories under home/images."""

    kind = "baseline"

    def image(self, iid: str, trees: list[Path], parent: str | None = None) -> None:
        d = self.home / "images" / iid
        d.mkdir(parents=True)
        for tree in trees:
            fill(d, tree)
        self.images[iid] = parent

    def lowers(self, iid: str) -> list[str]:
        """The image's directories, top first."""
        out: list[str] = []
        cur: str | None = iid
        while cur is not None:
            out.append(str(self.home / "images" / cur))
            cur = self.images[cur]
        return out

    @contextlib.contextmanager
    def base_files(self, iid: str) -> Iterator[str]:
        yield str(self.home / "images" / iid)

    def close(self) -> None:
        for cid in list(getattr(self, "live", [])):
            with contextlib.suppress(StorageError, OSError, subprocess.CalledProcessError):
                self.release(cid)
        _native.umount_tree(str(self.home), detach=True)
        rm_tree(self.home)


class HostContender(_DirImages):
    name = HOST

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.live: list[str] = []

    def container(self, cid: str, iid: str) -> str:
        dst = self.home / "containers" / cid
        dst.mkdir(parents=True)
        for low in reversed(self.lowers(iid)):  # lowest first: upper files win
            subprocess.run(["cp", "-a", "--reflink=never", f"{low}/.", str(dst)], check=True)
        self.live.append(cid)
        return str(dst)

    def release(self, cid: str) -> None:
        rm_tree(self.home / "containers" / cid)
        self.live.remove(cid)


class _UnionBaseline(_DirImages):
    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.live: list[str] = []

    def _dirs(self, cid: str) -> tuple[Path, Path, Path]:
        base = self.home / "containers" / cid
        return base / "upper", base / "work", base / "mnt"

    def container(self, cid: str, iid: str) -> str:
        upper, work, mnt = self._dirs(cid)
        for d in (upper, work, mnt):
            d.mkdir(parents=True)
        self._mount(mnt, self.lowers(iid), upper, work)
        self.live.append(cid)
        return str(mnt)

    def release(self, cid: str) -> None:
        upper, work, mnt = self._dirs(cid)
        self._umount(mnt)
        self.live.remove(cid)
        rm_tree(upper.parent)


class KernelOverlay(_UnionBaseline):
    name = KERNEL_OVERLAY

    def _mount(self, mnt: Path, lowers: list[str], upper: Path, work: Path) -> None:
        _native.fsmount_overlay(str(mnt), lowers, str(upper), str(work), ["index=off"])

    def _umount(self, mnt: Path) -> None:
        _native.umount(str(mnt))

    def options(self) -> dict[str, str]:
        return {"mount options": "index=off (copy-up fsyncs: no volatile)"}


class FuseOverlayfs(_UnionBaseline):
    name = FUSE_OVERLAYFS

    def _mount(self, mnt: Path, lowers: list[str], upper: Path, work: Path) -> None:
        subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={':'.join(lowers)},"
                        f"upperdir={upper},workdir={work}", str(mnt)],
                       check=True, capture_output=True)

    def _umount(self, mnt: Path) -> None:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, capture_output=True)
        deadline = time.monotonic() + 10  # the daemon lets go of its branches
        while _native.is_mountpoint(str(mnt)) and time.monotonic() < deadline:
            time.sleep(0.01)


def _ctrbase():  # type: ignore[no-untyped-def]
    from . import ctrbase  # it builds on Contender, defined here

    return ctrbase


def available_baselines() -> dict[str, str | None]:
    """Each baseline -> None if it can run here, else why not."""
    return {
        HOST: None,
        KERNEL_OVERLAY: None if _native.has_new_mount_api() else "no fsopen/fsmount here",
        FUSE_OVERLAYFS: (None if shutil.which("fuse-overlayfs") and shutil.which("fusermount3")
                         else "fuse-overlayfs is not installed"),
        CTR_RUN: _ctrbase().missing(),
    }


def make(name: str, home: Path, options: dict[str, str] | None = None) -> Contender:
    if name == HOST:
        return HostContender(home)
    if name == KERNEL_OVERLAY:
        return KernelOverlay(home)
    if name == FUSE_OVERLAYFS:
        return FuseOverlayfs(home)
    if name == CTR_RUN:
        return _ctrbase().CtrRun(home)
    return DriverContender(home, name, options)


def du(path: Path) -> int:
    """Bytes allocated under path (blocks, not sizes: sparse pool files count what they hold)."""
    out = subprocess.run(["du", "-sx", "--block-size=1", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])
