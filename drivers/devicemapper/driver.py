"""The devicemapper driver: every layer a thin snapshot of its parent, as Docker's was.

A thin pool holds a base thin device of dm.basesize, formatted once (ext4 by default, xfs by
option); each layer is `create_snap` of its parent's device (of the base for a layer without
parent), so a layer costs only the blocks it changes (copy-on-write per data block, 64 KiB by
default). get() activates the layer's device and mounts its filesystem; put() unmounts and
deactivates it.

Layout under the driver home (loop-lvm style, the default)::

    pool/            a storagekit thin pool: sparse data file, metadata file (dm-thin's
                     on-disk format, readable by thin_check/thin_dump), served by a daemon
                     while devices are active (see storagekit.engines.thin)
    metadata/        per-device records and the transaction record (see records.py)
    mnt/<id>/        where get() mounts the layer
    lock             flock()ed while the pool's devices or records change

Pool backends (backends.py): storagekit's thin engine by default — the kernel here has no
device-mapper —; the kernel's dm-thin when /dev/mapper/control works and dm.thinpooldev names
a /dev/mapper pool. dm.thinpooldev naming a storagekit pool directory uses that pool.

Devices are made and deleted inside transactions, as Docker's deviceset did (deviceset.py):
a crash never leaves a device half made.

Diffs are naive (mount and compare), as Docker's devicemapper did.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from storagekit import _native
from storagekit.driver import CreateOpts, Driver, Mount, check_id
from storagekit.engines import thin
from storagekit.errors import (
    DriverUnsupported,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StorageError,
)
from storagekit.fsutil import dead_temporaries, locked
from storagekit.hostinfo import backing_fs, mounts_of_device

from . import options as dmopts
from .backends import EngineBackend, KernelBackend
from .deviceset import DeviceSet
from .records import BASE, DeviceInfo, Records

BUSY_WAIT = 10.0  # seconds a device unmounted here may stay busy elsewhere (see _deactivate)

# The program that formats the base device, by dm.fs, and where it comes from.
MKFS = {"ext4": ("mkfs.ext4", "e2fsprogs"), "xfs": ("mkfs.xfs", "xfsprogs")}


def _human(n: float) -> str:
    """Sizes as `docker info` printed them (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return str(n)


def _on_path(program: str) -> bool:
    """Is program an executable on $PATH? (shutil.which, without importing shutil and the
    compression modules it brings: this runs on every store open.)"""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return True
    return False


def _has_kernel_dm() -> bool:
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR))
        return True
    except OSError:
        return False


class DeviceMapperDriver(Driver):
    name = "devicemapper"
    priority = 5
    option_help = dmopts.HELP

    shaping_options = ("dm.fs", "dm.basesize", "dm.blocksize", "dm.loopdatasize",
                       "dm.loopmetadatasize", "dm.thinpooldev")

    @classmethod
    def canonical_option(cls, key: str, value: str) -> str:
        if key in ("dm.basesize", "dm.blocksize", "dm.loopdatasize") or (
                key == "dm.loopmetadatasize" and value):
            return str(dmopts.parse_bytes(key, value))
        return value

    def on_disk_options(self) -> dict[str, str]:
        st = self.backend.status()
        base = self.records.device(BASE)
        out = {
            "dm.fs": self.records.deviceset().get("BaseDeviceFilesystem") or self.opts.fs,
            "dm.basesize": str(base.size if base else self.opts.base_size),
            "dm.thinpooldev": self.opts.thin_pool_dev,
        }
        if self.backend.kind == "engine":
            block = int(st["data_block_bytes"])
            out["dm.blocksize"] = str(block)
            out["dm.loopdatasize"] = str(int(st["total_data_blocks"]) * block)
            out["dm.loopmetadatasize"] = str(os.path.getsize(os.path.join(self.pool_dir,
                                                                         "metadata")))
        return out

    def __init__(self, home, options=None):
        super().__init__(home, options)
        self.opts = dmopts.parse(self.options)
        self.records = Records(self.home / "metadata")
        base = self.records.device(BASE)
        if base is None or not base.initialized:  # the base device is still to be formatted
            tool, package = MKFS[self.opts.fs]
            if not _on_path(tool):
                raise DriverUnsupported(
                    self.name, f"dm.fs={self.opts.fs} needs {tool}, which is not installed "
                    f"({package})")
        (self.home / "mnt").mkdir(mode=0o700, exist_ok=True)
        with self._locked():
            self.backend = self._open_backend()
            self.devices = DeviceSet(self.backend, self.records, self.opts.deferred_deletion)
            self.devices.process_pending_transaction()
            self.devices.retry_deferred_deletions()
            self._ensure_base()

    # ------------------------------------------------------------------ host support

    @classmethod
    def probe(cls, root):
        # The default dm.fs; the driver checks for the one its options name when it starts.
        tool, package = MKFS["ext4"]
        if not _on_path(tool):
            return False, f"{tool} is not installed ({package})"
        if _has_kernel_dm():
            return True, "the kernel's dm-thin"
        if not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
            return False, "neither device-mapper nor FUSE and loop devices for the thin engine"
        return True, "storagekit's thin engine (dm-thin metadata format) on loop devices"

    # ------------------------------------------------------------------ pool and records

    def _locked(self) -> contextlib.AbstractContextManager[int]:
        return locked(self.home_dir + "/lock")

    @property
    def pool_dir(self) -> str:
        dev = self.opts.thin_pool_dev
        return dev if dev and not dev.startswith("/dev/") else str(self.home / "pool")

    def _open_backend(self):
        dev = self.opts.thin_pool_dev
        if dev.startswith("/dev/"):
            if not _has_kernel_dm():
                raise InvalidArgument(f"dm.thinpooldev={dev}: this host has no device-mapper")
            from .dmioctl import KernelDm

            backend = KernelBackend(os.path.basename(dev), KernelDm(), "storagekit")
            backend.deferred_removal = self.opts.deferred_removal
            return backend
        pool = Path(self.pool_dir)
        if not (pool / "pool.json").exists() and not self.records.devices():
            if dev:
                raise InvalidArgument(
                    f"dm.thinpooldev={dev}: not a storagekit thin pool "
                    "(make one with 'storagekit thin create-pool')"
                )
            thin.create_pool(
                pool, self.opts.data_size, self.opts.metadata_size, self.opts.block_size
            )
        backend = EngineBackend(str(pool))
        if dev and not self.records.devices():  # adopting a pool: it must be unused
            st = backend.status()
            if st["used_data_blocks"] or st["transaction_id"]:
                raise InvalidArgument(
                    f"dm.thinpooldev={dev}: the pool is in use (transaction id "
                    f"{st['transaction_id']}, {st['used_data_blocks']} data blocks used); "
                    "a pool must be empty to be adopted"
                )
        return backend

    # ------------------------------------------------------------------ the base device

    def _ensure_base(self) -> None:
        info = self.records.device(BASE)
        if info is not None and info.initialized:
            return
        if info is not None:  # a crash while formatting: start over
            self.devices.delete(BASE, info)
        info = self.devices.create(BASE, None, self.opts.base_size)
        dev = self.backend.activate(info.device_id, info.size)
        try:
            self._mkfs(dev)
            import tempfile  # once per driver home: not imported for every CLI call

            with tempfile.TemporaryDirectory(dir=self.home) as mnt:
                self._mount_fs(dev, mnt)
                try:
                    # the filesystem's root is a layer's root: nothing but what layers add
                    with contextlib.suppress(FileNotFoundError):
                        os.rmdir(os.path.join(mnt, "lost+found"))
                    os.chmod(mnt, 0o755)
                finally:
                    _native.umount(mnt)
        finally:
            self.backend.deactivate(info.device_id)
        info.initialized = True
        self.records.save_device(BASE, info)
        meta = self.records.deviceset()
        import uuid

        meta.update(BaseDeviceUUID=str(uuid.uuid4()), BaseDeviceFilesystem=self.opts.fs)
        self.records.save_deviceset(meta)

    def _mkfs(self, dev: str) -> None:
        if self.opts.fs == "ext4":
            # no discard of a fresh thin device; inode tables left to be initialised lazily
            # (and never by the kernel thread: see the mount options)
            argv = [
                "mkfs.ext4",
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=1",
                *self.opts.mkfs_args,
                dev,
            ]
        else:
            argv = ["mkfs.xfs", "-q", "-f", "-K", *self.opts.mkfs_args, dev]
        import subprocess

        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StorageError(f"{' '.join(argv)} failed: {proc.stderr.strip()[:300]}")

    def _mount_options(self) -> list[str]:
        # Snapshots share the base's filesystem UUID: xfs must be told (nouuid); ext4 must
        # not start zeroing inode tables in every snapshot (noinit_itable).
        extra = ["nouuid"] if self.opts.fs == "xfs" else ["noinit_itable"]
        return [*extra, *self.opts.mount_options]

    def _mount_fs(self, dev: str, target: str, readonly: bool = False) -> None:
        flags = _native.MS_RDONLY if readonly else 0
        _native.mount(dev, target, self.opts.fs, flags, ",".join(self._mount_options()))

    # ------------------------------------------------------------------ layers

    def _info(self, layer_id: str) -> DeviceInfo:
        info = self.records.device(check_id(layer_id))
        if info is None or info.deleted:
            raise LayerNotFound(layer_id)
        return info

    def exists(self, layer_id: str) -> bool:
        info = self.records.device(check_id(layer_id))
        return info is not None and not info.deleted

    def parent(self, layer_id: str) -> str | None:
        self._info(layer_id)
        return self.records.parent(layer_id)

    def create(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, readonly=True)

    def create_rw(self, layer_id, parent=None, opts: CreateOpts | None = None):
        self._create(layer_id, parent, readonly=False)

    def _create(self, layer_id: str, parent: str | None, readonly: bool) -> None:
        check_id(layer_id)
        with self._locked():
            if self.records.device(layer_id) is not None:
                raise LayerExists(layer_id)
            if readonly:
                self._set_readonly(layer_id)
            if parent is not None and not self.exists(check_id(parent)):
                raise LayerNotFound(parent, " (the parent of the new layer)")
            self._check_free_space()
            origin = self._info(parent) if parent is not None else self.records.device(BASE)
            assert origin is not None
            self.records.save_parent(layer_id, parent)
            self.devices.create(layer_id, origin, origin.size)
            os.makedirs(self._mnt(layer_id), 0o755, exist_ok=True)

    def _check_free_space(self) -> None:
        st = self.backend.status()
        total, used = st["total_data_blocks"], st["used_data_blocks"]
        minimum = total * self.opts.min_free_percent // 100
        if total - used < minimum:
            raise StorageError(
                f"the thin pool has {total - used} free data blocks, less than the minimum "
                f"required {minimum}: create more free space in the pool or lower "
                "dm.min_free_space"
            )

    def remove(self, layer_id: str) -> None:
        self._check_removable(layer_id)
        with self._locked():
            info = self.records.device(check_id(layer_id))
            if info is None:
                self.records.drop_parent(layer_id)
                self._forget_readonly(layer_id)
                return
            if info.device_id in self.backend.active():
                # Nobody holds the layer (no count): a mount left here is a killed
                # process's, made before it could count it.
                if _native.is_mountpoint(self._mnt(layer_id)):
                    _native.umount(self._mnt(layer_id), _native.MNT_DETACH)
                self._deactivate(layer_id, info)
            self.devices.delete(layer_id, info)
            if not info.deleted:
                self.records.drop_parent(layer_id)
                self._forget_readonly(layer_id)
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.rmdir(self._mnt(layer_id))

    # ------------------------------------------------------------------ mounting

    def _mnt(self, layer_id: str) -> str:
        return str(self.home / "mnt" / check_id(layer_id))

    def path(self, layer_id: str) -> str:
        return self._mnt(layer_id)

    def _mount(self, layer_id: str) -> str:
        info = self._info(layer_id)
        dev = self.backend.active().get(info.device_id) or self.backend.activate(
            info.device_id, info.size
        )
        target = self._mnt(layer_id)
        os.makedirs(target, 0o755, exist_ok=True)
        self._mount_fs(dev, target, readonly=self._mount_readonly(layer_id))
        return target

    def _deactivate(self, layer_id: str, info: DeviceInfo) -> None:
        """Deactivate the layer's device. Unmounted here, it can stay busy for a moment: a
        container starting at the same time copied every mount into its new mount namespace
        and drops the copies only once it has pivoted into its own root. So a device that is
        mounted nowhere in this namespace is waited for (up to BUSY_WAIT seconds)."""
        deadline = time.monotonic() + BUSY_WAIT
        delay = 0.005
        while True:
            try:
                self.backend.deactivate(info.device_id)
                return
            except thin.DeviceNotActive:
                return  # its daemon was killed: the device went with it
            except thin.DeviceBusy:
                dev = self.backend.active().get(info.device_id)
                mounted_here = dev is not None and mounts_of_device(dev)
                if mounted_here or time.monotonic() + delay > deadline:
                    if self.opts.deferred_removal:
                        return
                    raise LayerInUse(layer_id, "its thin device is still busy") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _unmount(self, layer_id: str) -> None:
        target = self._mnt(layer_id)
        if _native.is_mountpoint(target):
            _native.umount(target, _native.MNT_DETACH if self.opts.deferred_removal else 0)
        self._deactivate(layer_id, self._info(layer_id))

    def _is_mounted(self, layer_id: str) -> bool:
        return _native.is_mountpoint(self._mnt(layer_id))

    def mounts(self, layer_id: str) -> list[Mount]:
        """The layer's filesystem on its activated device (activated here if needed; it stays
        active until the layer is removed or cleanup())."""
        info = self._info(layer_id)
        with self._locked():
            dev = self.backend.active().get(info.device_id) or self.backend.activate(
                info.device_id, info.size
            )
        ro = ["ro"] if self.is_readonly(layer_id) else []
        return [Mount(self.opts.fs, dev, [*ro, *self._mount_options()])]

    def cleanup(self) -> None:
        super().cleanup()
        with self._locked():
            with contextlib.suppress(thin.ThinError, OSError):
                self.backend.stop()

    # ------------------------------------------------------------------ garbage

    def _layer_ids(self) -> list[str]:
        return sorted(n for n in self.records.devices() if n != BASE)

    def collect(self, known: set[str]) -> list[str]:
        gone = super().collect(known)
        mnt = f"{self.home_dir}/mnt"
        for name in os.listdir(mnt):
            if name not in known and not self.exists(name):
                path = f"{mnt}/{name}"
                _native.umount_tree(path, detach=True)
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                    gone.append(path)
        for directory in (self.records.root, self.records.layers, self.records.parents):
            for path in dead_temporaries(str(directory)):
                os.unlink(path)
                gone.append(path)
        return gone

    # ------------------------------------------------------------------ info

    def status(self) -> list[tuple[str, str]]:
        st = self.backend.status()
        block = int(st.get("data_block_size", self.opts.block_size // 512)) * 512
        base = self.records.device(BASE)
        out = [
            ("Pool Name", os.path.basename(self.pool_dir)),
            ("Pool Blocksize", _human(block)),
            ("Base Device Size", _human(base.size if base else self.opts.base_size)),
            ("Backing Filesystem", self.opts.fs),
            ("Udev Sync Supported", "false (not needed: no udev)"),
        ]
        used_d, total_d = st["used_data_blocks"], st["total_data_blocks"]
        used_m, total_m = st["used_metadata_blocks"], st["total_metadata_blocks"]
        out += [
            ("Data Space Used", _human(used_d * block)),
            ("Data Space Total", _human(total_d * block)),
            ("Data Space Available", _human((total_d - used_d) * block)),
            ("Metadata Space Used", _human(used_m * 4096)),
            ("Metadata Space Total", _human(total_m * 4096)),
            ("Metadata Space Available", _human((total_m - used_m) * 4096)),
            (
                "Thin Pool Minimum Free Space",
                _human(total_d * self.opts.min_free_percent // 100 * block),
            ),
            ("Deferred Removal Enabled", str(self.opts.deferred_removal).lower()),
            ("Deferred Deletion Enabled", str(self.opts.deferred_deletion).lower()),
            (
                "Deferred Deleted Device Count",
                str(sum(1 for i in self.records.devices().values() if i.deleted)),
            ),
            (
                "Pool Backend",
                "storagekit thin engine" if self.backend.kind == "engine" else "kernel dm-thin",
            ),
            ("Host Filesystem", backing_fs(self.home)),
        ]
        if self.backend.kind == "engine":
            pool = Path(self.pool_dir)
            out += [
                ("Data loop file", str(pool / "data")),
                ("Metadata loop file", str(pool / "metadata")),
            ]
        return out

    def metadata(self, layer_id: str) -> dict[str, str]:
        info = self._info(layer_id)
        return {
            "DeviceId": str(info.device_id),
            "DeviceSize": str(info.size),
            "DeviceName": f"storagekit-{info.device_id}",
            "MergedDir": self._mnt(layer_id),
        }
