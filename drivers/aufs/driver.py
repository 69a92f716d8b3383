"""The aufs driver: layers as aufs branches.

Layout under the driver home (as Docker's aufs driver had it)::

    layers/<id>      the layer's parents, one id per line, immediate parent first
    diff/<id>/       the layer's own files: an aufs branch, whiteouts in aufs's on-disk
                     format (.wh.<name>, .wh..wh..opq; .wh..wh.* bookkeeping)
    mnt/<id>/        where get() mounts the union of the layer and its parents
    .readonly/<id>   the layer is read-only (made by create(), committed, or given a child,
                     whose content depends on it): its union is mounted with every branch
                     read-only (a base layer: a read-only bind mount of its diff on mnt/)
    diff/.partial-<id>, layers/.partial-<id>   a layer being created

Backends. Where /proc/filesystems lists aufs, get() mounts the kernel's aufs with options
like Docker's (`br:<rw>=rw:<ro>=ro+wh:...,dio,xino=/dev/shm/aufs.xino,dirperm1`, further
branches appended by `append:` remounts when the first page is full; a read-only layer's top
branch is `=ro`). Elsewhere — this kernel
and most current ones — it starts storagekit's own union filesystem engine
(storagekit.engines.union: aufs branch semantics over FUSE, one daemon per mounted layer), which
reads and writes the same on-disk format, so a layer made by one backend mounts with the
other. A writable base layer is not mounted: get() returns its diff directory.

Diffs. The diff directory already is an OCI layer (aufs whiteouts are OCI whiteouts): diff and
apply against the direct parent export and fill it directly, leaving out the .wh..wh.*
bookkeeping except .wh..wh..opq. Any other parent uses the naive diff.
"""

from __future__ import annotations

import contextlib
import os

from storagekit import _native
from storagekit.driver import CreateOpts, Driver, Mount, check_id
from storagekit.errors import InvalidArgument, LayerExists, LayerNotFound, StorageError
from storagekit.hostinfo import backing_fs, filesystems

PAGE = os.sysconf("SC_PAGE_SIZE")
XINO = "/dev/shm/aufs.xino"


def kernel_aufs_options(branches: list[str], label: str = "", dirperm1: bool = True,
                        page_size: int = PAGE, readonly: bool = False) -> tuple[str, list[str]]:
    """The kernel aufs mount data for branches (top first; the first is rw, or ro for a
    read-only layer) and the `append:` remount data for the branches that do not fit one
    page, as Docker built them: its branch buffer was one page less the label and the fixed
    options."""
    fixed = f",dio,xino={XINO}" + (",dirperm1" if dirperm1 else "")
    budget = page_size - len(label) - len(fixed) - 1
    first = f"br:{branches[0]}={'ro' if readonly else 'rw'}"
    rest = list(branches[1:])
    while rest and len(first) + len(f":{rest[0]}=ro+wh") <= budget:
        first += f":{rest.pop(0)}=ro+wh"
    appends = [f"append:{b}=ro+wh" for b in rest]
    for a in appends:
        if len(a) >= page_size:
            raise StorageError(f"aufs branch path too long for a mount option: {a[:60]}...")
    return first + fixed + (f",{label}" if label else ""), appends


class AufsDriver(Driver):
    name = "aufs"
    priority = 20
    dialect = "oci"
    option_help = {
        "aufs.backend": "auto (the kernel's aufs when present, else storagekit's engine), "
        "kernel or engine",
    }

    def __init__(self, home, options=None):
        super().__init__(home, options)
        backend = self.options.get("aufs.backend", "auto")
        if backend not in ("auto", "kernel", "engine"):
            raise InvalidArgument(
                f"aufs.backend must be auto, kernel or engine, not {backend!r}")
        has_kernel = "aufs" in filesystems()
        if backend == "kernel" and not has_kernel:
            raise InvalidArgument("aufs.backend=kernel: this kernel has no aufs")
        self.kernel = backend == "kernel" or (backend == "auto" and has_kernel)
        # str paths: pathlib is not imported on a container's boot (see Driver.home)
        self._layers_prefix = f"{self.home_dir}/layers/"
        for sub in ("layers", "diff", "mnt"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{self.home_dir}/{sub}", 0o700)

    @classmethod
    def probe(cls, root):
        fstype = backing_fs(root)
        if fstype in ("aufs", "overlay") or fstype.startswith("fuse"):
            return False, f"{root} is on {fstype}, which cannot hold aufs branches"
        if "aufs" in filesystems():
            return True, f"the kernel's aufs on {fstype}"
        if "fuse" not in filesystems() or not os.path.exists("/dev/fuse"):
            return False, "the kernel has neither aufs nor FUSE for storagekit's union engine"
        return True, f"storagekit's union filesystem engine (FUSE) on {fstype}"

    # ------------------------------------------------------------------ records

    def _diff(self, layer_id: str) -> str:
        return f"{self.home_dir}/diff/{check_id(layer_id)}"

    def _mnt(self, layer_id: str) -> str:
        return f"{self.home_dir}/mnt/{check_id(layer_id)}"

    def _parents(self, layer_id: str) -> list[str]:
        try:
            with open(self._layers_prefix + check_id(layer_id)) as f:
                text = f.read()
        except FileNotFoundError:
            raise LayerNotFound(layer_id) from None
        return [line for line in text.splitlines() if line]

    def parent(self, layer_id: str) -> str | None:
        parents = self._parents(layer_id)
        return parents[0] if parents else None

    # ------------------------------------------------------------------ lifecycle

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, readonly=True)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, readonly=False)

    def _create(self, layer_id: str, parent: str | None, readonly: bool) -> None:
        record = self._layers_prefix + check_id(layer_id)
        if os.path.exists(record) or os.path.lexists(self._diff(layer_id)):
            raise LayerExists(layer_id)
        parents = [] if parent is None else [parent, *self._parents(check_id(parent))]
        if parent is not None and not self.is_readonly(parent):
            self._set_readonly(parent)  # its child's view depends on it from now on
        if readonly:
            self._set_readonly(layer_id)
        os.mkdir(self._diff(layer_id), 0o755)
        os.makedirs(self._mnt(layer_id), 0o755, exist_ok=True)
        tmp = f"{self._layers_prefix}.partial-{layer_id}"
        with open(tmp, "w") as f:
            f.write("".join(f"{p}\n" for p in parents))
        os.rename(tmp, record)  # the layer exists from here on

    def remove(self, layer_id: str) -> None:
        self._check_removable(layer_id)
        for record in (self._layers_prefix + check_id(layer_id),
                       f"{self._layers_prefix}.partial-{layer_id}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record)
        for d in (self._mnt(layer_id), self._diff(layer_id)):
            if os.path.lexists(d):
                _native.umount_tree(d, detach=True)
                _native.remove_tree(str(d))
        self._forget_readonly(layer_id)

    # ------------------------------------------------------------------ mounting

    def _branches(self, layer_id: str) -> list[str]:
        return [self._diff(layer_id)] + [self._diff(p) for p in self._parents(layer_id)]

    def path(self, layer_id: str) -> str:
        if self._unmounted_base(layer_id):
            return self._diff(layer_id)
        return self._mnt(layer_id)

    def _unmounted_base(self, layer_id: str) -> bool:
        """A writable base layer: get() returns its diff directory, nothing is mounted."""
        return self.parent(layer_id) is None and not self.is_readonly(layer_id)

    def _mount(self, layer_id: str) -> str:
        readonly = self._mount_readonly(layer_id)
        if self.parent(layer_id) is None:
            if not readonly:
                return self._diff(layer_id)
            target = self._mnt(layer_id)
            _native.bind(self._diff(layer_id), target, readonly=True)
            return target
        target = self._mnt(layer_id)
        _native.umount_tree(target, detach=True)  # a dead engine's mount
        branches = self._branches(layer_id)
        if self.kernel:
            data, appends = kernel_aufs_options(branches, readonly=readonly)
            _native.mount("none", target, "aufs", 0, data)
            for extra in appends:
                _native.mount("none", target, "aufs", _native.MS_REMOUNT, extra)
        else:
            from storagekit.engines import union

            union.start(target, branches, readonly=readonly)
        return target

    def _unmount(self, layer_id: str) -> None:
        if self._unmounted_base(layer_id):
            return
        target = self._mnt(layer_id)
        if self.kernel or self.parent(layer_id) is None:
            _native.umount_tree(target, detach=True)
        else:
            from storagekit.engines import union

            union.stop(target)

    def _is_mounted(self, layer_id: str) -> bool:
        if self._unmounted_base(layer_id):
            return True
        target = self._mnt(layer_id)
        if not _native.is_mountpoint(target):
            return False
        try:
            os.stat(target)
        except OSError:  # a dead engine: ENOTCONN
            return False
        return True

    def mounts(self, layer_id: str) -> list[Mount]:
        readonly = self.is_readonly(layer_id)
        if self.parent(layer_id) is None:
            return [Mount("bind", self._diff(layer_id), ["rbind", "ro" if readonly else "rw"])]
        if self.kernel:
            data, appends = kernel_aufs_options(self._branches(layer_id), readonly=readonly)
            if appends:
                raise StorageError("this stack needs append: remounts; it cannot be one mount")
            return [Mount("aufs", "none", data.split(","))]
        # A FUSE engine mounts through its helper program, as fuse-overlayfs does:
        # mount(8) -> mount.fuse3 -> storagekit-unionfs, which starts a daemon for the mount.
        from storagekit.engines import union

        return [Mount(union.MOUNT_TYPE, union.HELPER,
                      union.mount_options(self._branches(layer_id), readonly=readonly))]

    # ------------------------------------------------------------------ diffs (native)

    def own_dir(self, layer_id: str) -> str:
        return self._diff(layer_id)

    def _parent_dirs(self, layer_id: str) -> list[str]:
        return [self._diff(p) for p in self._parents(layer_id)]

    # ------------------------------------------------------------------ garbage

    def _layer_ids(self) -> list[str]:
        ids = {n for n in os.listdir(self._layers_prefix) if not n.startswith(".")}
        # a branch made before its record (a create killed in between)
        ids |= {n for n in os.listdir(f"{self.home_dir}/diff") if not n.startswith(".")}
        return sorted(ids)

    def exists(self, layer_id: str) -> bool:
        return os.path.isfile(self._layers_prefix + check_id(layer_id))

    def collect(self, known: set[str]) -> list[str]:
        gone = super().collect(known) + self._collect_leftovers(self._layers_prefix, known)
        for layer_id in self._layer_ids():
            if layer_id not in known and not self.exists(layer_id):
                self.remove(layer_id)  # the branch and mount point of a half-made layer
                gone.append(f"layer {layer_id}")
        return gone

    # ------------------------------------------------------------------ info

    def status(self) -> list[tuple[str, str]]:
        layers = [n for n in os.listdir(self._layers_prefix) if not n.startswith(".")]
        return [
            ("Backing Filesystem", backing_fs(self.home_dir)),
            ("Backend", "kernel aufs" if self.kernel else "storagekit union engine (FUSE)"),
            ("Dirs", str(len(layers))),
            ("Dirperm1 Supported", "true"),
        ]

    def metadata(self, layer_id: str) -> dict[str, str]:
        parents = self._parents(layer_id)
        return {
            "Diff": self._diff(layer_id),
            "Mountpoint": self._mnt(layer_id) if parents else self._diff(layer_id),
            "Branches": ":".join(self._branches(layer_id)),
        }
