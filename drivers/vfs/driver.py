"""The vfs driver: every layer is a complete directory tree.

Layout under the driver home::

    dir/<id>/           the layer's whole filesystem (its parent's content plus its own)
    meta/<id>.json      {"parent": <id> | null, "rw": bool}
    dir/.partial-<id>   a layer being created (renamed to dir/<id> when complete)
    dir/.removing-<id>  a layer being removed

Creating a layer on a parent copies the parent's tree with the native tree copy, which shares
data with FICLONE where the filesystem can (xfs with reflink=1, btrfs): there a layer costs
metadata only. Elsewhere every layer is a full copy, as with Docker's vfs. Diffs are naive
(compare trees). get() of a writable layer mounts nothing and returns the directory; a
read-only one ("rw": false) is bind-mounted read-only onto itself while it is got.
"""

from __future__ import annotations

import contextlib
import json
import os

from storagekit import _native
from storagekit.driver import CreateOpts, Driver, Mount, check_id
from storagekit.errors import LayerExists, LayerNotFound
from storagekit.fsutil import atomic_write, dead_temporaries
from storagekit.hostinfo import backing_fs
from storagekit.options import bool_option


class VfsDriver(Driver):
    name = "vfs"
    priority = 10
    option_help = {"vfs.reflink": "share file data with the parent via FICLONE (default true)"}

    def __init__(self, home, options=None):
        super().__init__(home, options)
        self.reflink = bool_option(self.options, "vfs.reflink", True)
        # str paths: pathlib is not imported on a container's boot (see Driver.home)
        self._dir_prefix = f"{self.home_dir}/dir/"
        self._meta_prefix = f"{self.home_dir}/meta/"
        for d in (self._dir_prefix, self._meta_prefix):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
        self._reflink_works: bool | None = None

    @classmethod
    def probe(cls, root):
        return True, "works on any filesystem (layers share data on xfs reflink and btrfs)"

    # ------------------------------------------------------------------ paths

    def path(self, layer_id: str) -> str:
        return self._dir_prefix + check_id(layer_id)

    def _meta_path(self, layer_id: str) -> str:
        return f"{self._meta_prefix}{check_id(layer_id)}.json"

    def _meta(self, layer_id: str) -> dict:
        try:
            with open(self._meta_path(layer_id)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise LayerNotFound(layer_id) from None

    # ------------------------------------------------------------------ lifecycle

    def exists(self, layer_id: str) -> bool:
        return os.path.isdir(self.path(layer_id)) and os.path.exists(self._meta_path(layer_id))

    def parent(self, layer_id: str) -> str | None:
        return self._meta(layer_id)["parent"]

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, rw=False)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, rw=True)

    def _create(self, layer_id: str, parent: str | None, rw: bool) -> None:
        target = self.path(layer_id)
        meta = self._meta_path(layer_id)
        if os.path.exists(target) or os.path.exists(meta):
            raise LayerExists(layer_id)
        if parent is not None and not self.exists(check_id(parent)):
            raise LayerNotFound(parent, " (the parent of the new layer)")
        partial = f"{self._dir_prefix}.partial-{layer_id}"
        self._remove_tree(partial)
        if parent is None:
            os.mkdir(partial, 0o755)
        else:
            _native.copy_tree(self.path(parent), partial, reflink=self.reflink)
        atomic_write(meta, json.dumps({"parent": parent, "rw": rw}))
        os.rename(partial, target)

    def remove(self, layer_id: str) -> None:
        self._check_removable(layer_id)
        target = self.path(layer_id)
        doomed = f"{self._dir_prefix}.removing-{layer_id}"
        if os.path.exists(target):
            _native.umount_tree(target, detach=True)  # a read-only bind left by a crash
            os.rename(target, doomed)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._meta_path(layer_id))
        self._remove_tree(doomed)
        self._remove_tree(f"{self._dir_prefix}.partial-{layer_id}")

    @staticmethod
    def _remove_tree(path: str) -> None:
        if not os.path.lexists(path):
            return
        # Whatever is still mounted inside a layer is ours; never delete through a mount.
        _native.umount_tree(path, detach=True)
        _native.remove_tree(path)

    # ------------------------------------------------------------------ read-only layers

    def is_readonly(self, layer_id: str) -> bool:
        return not self._meta(layer_id)["rw"]

    def _set_readonly(self, layer_id: str) -> None:
        meta = self._meta(layer_id)
        meta["rw"] = False
        atomic_write(self._meta_path(layer_id), json.dumps(meta))

    # ------------------------------------------------------------------ mounting

    def _mount(self, layer_id: str) -> str:
        path = self.path(layer_id)
        if self._mount_readonly(layer_id) and not _native.is_mountpoint(path):
            _native.bind(path, path, readonly=True)
        return path

    def _unmount(self, layer_id: str) -> None:
        path = self.path(layer_id)
        if _native.is_mountpoint(path):
            _native.umount(path, _native.MNT_DETACH)

    def _is_mounted(self, layer_id: str) -> bool:
        return not self.is_readonly(layer_id) or _native.is_mountpoint(self.path(layer_id))

    def mounts(self, layer_id: str) -> list[Mount]:
        rw = self._meta(layer_id)["rw"]
        return [Mount("bind", self.path(layer_id), ["rbind", "rw" if rw else "ro"])]

    # ------------------------------------------------------------------ garbage

    def _layer_ids(self) -> list[str]:
        names = {n for n in os.listdir(self._dir_prefix) if not n.startswith(".")}
        names |= {n.removesuffix(".json") for n in os.listdir(self._meta_prefix)
                  if n.endswith(".json") and not n.startswith(".")}
        return sorted(names)

    def collect(self, known: set[str]) -> list[str]:
        gone = super().collect(known) + self._collect_leftovers(self._dir_prefix, known)
        for path in dead_temporaries(self._meta_prefix.rstrip("/")):
            os.unlink(path)
            gone.append(path)
        return gone

    # ------------------------------------------------------------------ info

    def _reflink_supported(self) -> bool:
        if self._reflink_works is None:
            probe = self.home / ".reflink-probe"
            copy = self.home / ".reflink-probe-copy"
            try:
                probe.write_bytes(b"x" * 4096)
                copy.unlink(missing_ok=True)
                self._reflink_works = _native.copy_entry(str(probe), str(copy)) == "reflink"
            finally:
                probe.unlink(missing_ok=True)
                copy.unlink(missing_ok=True)
        return self._reflink_works

    def status(self) -> list[tuple[str, str]]:
        sharing = self.reflink and self._reflink_supported()
        return [
            ("Backing Filesystem", backing_fs(self.home_dir)),
            ("Layer data sharing", "reflink (FICLONE)" if sharing else "full copy"),
        ]

    def metadata(self, layer_id: str) -> dict[str, str]:
        meta = self._meta(layer_id)
        return {
            "Dir": self.path(layer_id),
            "Parent": meta["parent"] or "",
            "RW": str(meta["rw"]).lower(),
        }
