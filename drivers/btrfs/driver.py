"""The btrfs driver: every layer a subvolume, a child a snapshot of its parent.

Copy-on-write at the extent level inside one filesystem: a snapshot shares its parent's
trees, so making a child costs the same whatever the parent's size, and a layer's blocks are
copied only when it writes them. Image (create) and view layers are read-only subvolumes (the
ro property, as `btrfs property set ro`): a write into one fails with EROFS, whoever makes it.
Container layers (create_rw) are writable until commit() sets the property, in O(1).
get() mounts nothing: the subvolume is its directory.

Layout, under the btrfs root (the home when it is on btrfs, else the driver's own loopback
mounted on <home>/fs: see volume.py)::

    subvolumes/<id>           the layer's subvolume
    subvolumes/.partial-<id>  one being made (renamed once complete)
    meta/<id>.json            {"parent": id | null, "rw": bool, "since": transid, "size": n}

"since" is the transaction that made the snapshot: changes() and diff() against the direct
parent read what was written after it (changes.py) instead of walking both trees, as long as
the parent itself is unchanged since; otherwise, the naive diff.

Quotas (as Docker's btrfs driver): a layer created with the storage option size=N gets a
quota group limit of N referenced bytes, quotas being enabled on the filesystem the first
time; btrfs.min_space refuses smaller sizes. remove() deletes the subvolume (nested ones
first) and its quota group.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os

from storagekit import _native
from storagekit.driver import Change, ChangeKind, CreateOpts, Driver, Mount, check_id
from storagekit.errors import InvalidArgument, LayerExists, LayerNotFound, StorageError
from storagekit.fsutil import atomic_write, dead_temporaries
from storagekit.hostinfo import backing_fs, filesystems
from storagekit.options import format_size, parse_bool, parse_size

from . import changes as fastchanges
from . import ioctl
from .volume import DEFAULT_SIZE, Volume

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PARTIAL, _REMOVING = ".partial-", ".removing-"


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000  # type: ignore[assignment]
    return str(n)


class BtrfsDriver(Driver):
    name = "btrfs"
    priority = 3
    option_help = {
        "btrfs.loopback": "size of the sparse loop file holding the driver's own btrfs where "
        "the home is not on btrfs (default 10G; a larger value grows it online)",
        "btrfs.min_space": "the smallest per-layer size (storage option size) allowed",
        "btrfs.direct": "keep the subvolumes on the home's own btrfs (true) or on a loopback "
        "(false); default: true where the home is on btrfs",
    }
    # where the subvolumes are is the one choice a later open cannot change
    shaping_options = ("btrfs.direct",)

    def __init__(self, home, options=None):
        super().__init__(home, options)
        loop = self.options.get("btrfs.loopback")
        self.loop_size = parse_size(loop, "btrfs.loopback") if loop else None
        if self.loop_size is not None and self.loop_size < 256 << 20:
            raise InvalidArgument("btrfs.loopback must be at least 256M (mkfs.btrfs's minimum)")
        ms = self.options.get("btrfs.min_space")
        self.min_space = parse_size(ms, "btrfs.min_space") if ms else 0
        direct = self.options.get("btrfs.direct")
        self.volume = Volume(self.home_dir, self.loop_size,
                             None if direct is None else parse_bool("btrfs.direct", direct))
        self.volume.open()
        root = self.volume.root
        self._sub_prefix = f"{root}/subvolumes/"
        self._meta_prefix = f"{root}/meta/"
        for d in (self._sub_prefix, self._meta_prefix):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)

    @classmethod
    def probe(cls, root):
        if "btrfs" not in filesystems():
            return False, "the kernel has no btrfs"
        if backing_fs(root) == "btrfs":
            return True, "subvolumes and snapshots on the root's btrfs"
        if not os.path.exists("/dev/loop-control"):
            return False, f"{root} is not on btrfs and there are no loop devices for a loopback"
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
            if os.access(os.path.join(d or ".", "mkfs.btrfs"), os.X_OK):
                return True, "subvolumes and snapshots on a btrfs of its own on a loop file"
        return False, f"{root} is not on btrfs and mkfs.btrfs is not installed (btrfs-progs)"

    def on_disk_options(self) -> dict[str, str]:
        return {"btrfs.direct": "false" if self.volume.loop else "true"}

    @classmethod
    def canonical_option(cls, key: str, value: str) -> str:
        if key in ("btrfs.loopback", "btrfs.min_space"):
            return str(parse_size(value, key))
        if key == "btrfs.direct":
            return str(parse_bool(key, value)).lower()
        return value

    # ------------------------------------------------------------------ paths and records

    def _ready(self) -> None:
        """Every way to the layers comes here: after cleanup() (a Docker plugin's Cleanup,
        dockerd going) the next use mounts the loopback again."""
        if self.volume.closed:
            self.volume.open()

    def path(self, layer_id: str) -> str:
        self._ready()
        return self._sub_prefix + check_id(layer_id)

    def _meta_path(self, layer_id: str) -> str:
        self._ready()
        return f"{self._meta_prefix}{check_id(layer_id)}.json"

    def _meta(self, layer_id: str) -> dict[str, Any]:
        try:
            with open(self._meta_path(layer_id)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise LayerNotFound(layer_id) from None

    def exists(self, layer_id: str) -> bool:
        return os.path.isdir(self.path(layer_id)) and os.path.exists(self._meta_path(layer_id))

    def parent(self, layer_id: str) -> str | None:
        return self._meta(layer_id)["parent"]

    # ------------------------------------------------------------------ lifecycle

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, False, opts)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, True, opts)

    def _size_option(self, opts: CreateOpts | None) -> int:
        storage = dict(opts.storage_opt) if opts else {}
        size_text = storage.pop("size", None)
        if storage:
            raise InvalidArgument(
                f"unknown storage option {sorted(storage)[0]!r} for driver btrfs (known: size)")
        if size_text is None:
            return 0
        size = parse_size(size_text, "size")
        if size <= 0:
            raise InvalidArgument(f"size={size_text!r}: must be positive")
        if self.min_space and size < self.min_space:
            raise InvalidArgument(
                f"size={size_text}: btrfs storage size cannot be less than "
                f"{format_size(self.min_space)} (btrfs.min_space)")
        return size

    def _create(self, layer_id: str, parent: str | None, rw: bool,
                opts: CreateOpts | None) -> None:
        target = self.path(layer_id)
        meta = self._meta_path(layer_id)
        if os.path.exists(target) or os.path.exists(meta):
            raise LayerExists(layer_id)
        if parent is not None and not self.exists(check_id(parent)):
            raise LayerNotFound(parent, " (the parent of the new layer)")
        size = self._size_option(opts)
        partial = f"{self._sub_prefix}{_PARTIAL}{layer_id}"
        self._delete_subvolume(partial)
        try:
            if parent is None:
                ioctl.create_subvolume(partial)
                os.chmod(partial, 0o755)
                since = 0
            else:
                ioctl.snapshot(self.path(parent), partial)
                since = ioctl.subvolume_info(partial).otransid
            if size:
                self._limit(partial, size)
            atomic_write(meta, json.dumps({"parent": parent, "rw": rw, "since": since,
                                           "size": size}))
            if not rw:
                ioctl.set_readonly(partial, True)
            os.rename(partial, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(meta)
            with contextlib.suppress(OSError):
                self._delete_subvolume(partial)
            if e.errno == errno.ENOSPC:
                raise StorageError(f"cannot create layer {layer_id}: the btrfs at "
                                   f"{self.volume.root} is full") from None
            raise

    def _limit(self, subvolume: str, size: int) -> None:
        root = self.volume.root
        if not ioctl.quota_enabled(root):
            ioctl.enable_quota(root)
        ioctl.limit_qgroup(subvolume, size)

    def remove(self, layer_id: str) -> None:
        self._check_removable(layer_id)
        target = self.path(layer_id)
        sub_id = None
        if os.path.isdir(target):
            sub_id = ioctl.subvolume_info(target).id
            self._delete_subvolume(target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._meta_path(layer_id))
        self._delete_subvolume(f"{self._sub_prefix}{_PARTIAL}{layer_id}")
        if sub_id is not None and ioctl.quota_enabled(self.volume.root):
            ioctl.destroy_qgroup(self.volume.root, sub_id)

    @staticmethod
    def _delete_subvolume(path: str) -> None:
        """Delete the subvolume at path and those nested in it (a container may make its
        own), deepest first; nothing at path is not an error."""
        if not os.path.lexists(path):
            return
        try:
            ioctl.delete_subvolume(path)
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
        ioctl.set_readonly(path, False)  # to unlink the nested ones' entries
        nested = []
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if os.lstat(sub).st_ino == ioctl.FIRST_FREE_OBJECTID:  # a subvolume's root
                    nested.append(sub)
        for sub in sorted(nested, key=len, reverse=True):
            with contextlib.suppress(OSError):
                ioctl.set_readonly(sub, False)
            BtrfsDriver._delete_subvolume(sub)
        ioctl.delete_subvolume(path)

    # ------------------------------------------------------------------ read-only layers

    def is_readonly(self, layer_id: str) -> bool:
        return not self._meta(layer_id)["rw"]

    def _set_readonly(self, layer_id: str) -> None:
        meta = self._meta(layer_id)
        ioctl.set_readonly(self.path(layer_id), True)
        meta["rw"] = False
        atomic_write(self._meta_path(layer_id), json.dumps(meta))

    # ------------------------------------------------------------------ mounting

    def _mount(self, layer_id: str) -> str:
        path = self.path(layer_id)
        if self.is_readonly(layer_id):
            # apply_diff writes into a read-only layer while nobody has it; a crash in the
            # middle of one leaves the property off: the record says what it must be
            ioctl.set_readonly(path, layer_id not in self._writers)
        return path

    def _unmount(self, layer_id: str) -> None:
        if layer_id in self._writers and self.is_readonly(layer_id):
            ioctl.set_readonly(self.path(layer_id), True)

    def mounts(self, layer_id: str) -> list[Mount]:
        rw = self._meta(layer_id)["rw"]
        return [Mount("bind", self.path(layer_id), ["rbind", "rw" if rw else "ro"])]

    # ------------------------------------------------------------------ diffs

    def _fast_changes(self, layer_id: str, parent: str | None) -> list[tuple[str, int]] | None:
        """The changes against the direct parent from the snapshot's generation (see
        changes.py), or None where only the naive diff can tell."""
        if parent is None or self.parent(layer_id) != parent:
            return None
        since = self._meta(layer_id).get("since") or 0
        if not since:
            return None
        ppath = self.path(parent)
        ioctl.sync(ppath)
        if fastchanges.changed_inodes(ppath, since)[0]:
            return None  # the parent was written after the snapshot (an apply_diff)
        return fastchanges.scan(self.path(layer_id), ppath, since)

    def changes(self, layer_id: str, parent: str | None = None) -> list[Change]:
        self._check_exists(layer_id, parent)
        raw = self._fast_changes(layer_id, parent)
        if raw is None:
            return super().changes(layer_id, parent)
        return [Change(p, ChangeKind(k)) for p, k in raw]

    def export_diff(self, layer_id: str, parent: str | None, fd: int,
                    compression: str = "none") -> dict[str, Any]:
        raw = self._fast_changes(layer_id, parent)
        if raw is None:
            return super().export_diff(layer_id, parent, fd, compression)
        # the parent too: a directory removed and made again exports opaque when it and
        # the parent's are empty (the naive export's rule, which the drivers agree on)
        with self._mounted(layer_id) as path, self._mounted(parent) as ppath:
            return _native.export_tar(path, fd, dialect="none", changes=raw,
                                      compression=compression, parent=ppath)

    def diff_size(self, layer_id: str, parent: str | None = None) -> int:
        self._check_exists(layer_id, parent)
        raw = self._fast_changes(layer_id, parent)
        if raw is None:
            return super().diff_size(layer_id, parent)
        return _native.paths_size(self.path(layer_id), fastchanges.paths(raw))

    # ------------------------------------------------------------------ garbage and cleanup

    def _layer_ids(self) -> list[str]:
        self._ready()
        names = {n for n in os.listdir(self._sub_prefix) if not n.startswith(".")}
        names |= {n.removesuffix(".json") for n in os.listdir(self._meta_prefix)
                  if n.endswith(".json") and not n.startswith(".")}
        return sorted(names)

    def collect(self, known: set[str]) -> list[str]:
        gone = super().collect(known)
        self._ready()
        for name in os.listdir(self._sub_prefix):
            for prefix in (_PARTIAL, _REMOVING):
                if name.startswith(prefix) and name[len(prefix):] not in known:
                    path = self._sub_prefix + name
                    with contextlib.suppress(OSError):
                        self._delete_subvolume(path)
                        gone.append(path)
        for path in dead_temporaries(self._meta_prefix.rstrip("/")):
            os.unlink(path)
            gone.append(path)
        # prune's last step: a loopback nobody uses goes (the next open mounts it again)
        with self._refs.locked():
            held = any(self._refs.holders(lid) for lid in self._refs.layers())
            if not held and self.volume.release_if_idle():
                gone.append(f"idle loopback mount {self.volume.root}")
        return gone

    def cleanup(self) -> None:
        super().cleanup()
        self.volume.close()

    # ------------------------------------------------------------------ info

    def status(self) -> list[tuple[str, str]]:
        self._ready()
        root = self.volume.root
        out = [("Backing Filesystem", "btrfs" if self.volume.loop else backing_fs(root))]
        if self.volume.loop:
            out += [("Loopback File", self.volume.image),
                    ("Loopback Size", _human(self.volume.size() or DEFAULT_SIZE))]
        for kind, total, used in ioctl.space_info(root):
            out += [(f"{kind} Space Used", _human(used)), (f"{kind} Space Total", _human(total))]
        out.append(("Quotas", "enabled" if ioctl.quota_enabled(root) else "disabled"))
        if self.min_space:
            out.append(("Min Space", _human(self.min_space)))
        return out

    def metadata(self, layer_id: str) -> dict[str, str]:
        meta = self._meta(layer_id)
        info = ioctl.subvolume_info(self.path(layer_id))
        out = {
            "Dir": self.path(layer_id),
            "Parent": meta["parent"] or "",
            "RW": str(meta["rw"]).lower(),
            "SubvolumeID": str(info.id),
            "ReadOnlyProperty": str(info.readonly).lower(),
        }
        if meta.get("size"):
            out["Size"] = str(meta["size"])
        return out
