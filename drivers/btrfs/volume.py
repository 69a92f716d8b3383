"""Where the btrfs driver's subvolumes live: the home itself when it is on btrfs, otherwise
a btrfs of the driver's own on a sparse loop file under the home (the way devicemapper makes
its pool, so the driver works on any host whose kernel has btrfs).

Loopback layout::

    btrfs.img   the sparse file, made with mkfs.btrfs at the first open, grown online
                (truncate, loop capacity, `btrfs filesystem resize max`) when a later open
                asks for more with btrfs.loopback
    fs/         where it is mounted (from the first open until cleanup())
    .growing    there while a grow is under way (finished by the next open after a crash)

The loop device is attached with LOOP_CONFIGURE (storagekit.engines.thin.loopdev, shared
with the thin engine); a loop device over btrfs.img left attached without its mount (a
killed process between attach and mount, a mount removed from outside) is detached before a
new one is attached: btrfs must never see two devices with the same filesystem.

Every open driver holds a shared lock on .volume.users for its life (the kernel drops it
with the process); `storagekit prune` (the driver's collect) unmounts the loopback when it
can take that lock exclusively — nobody has the driver open — and nothing is got, so an idle
store leaves no mount or loop device behind. The next open mounts it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from storagekit import _native
from storagekit.errors import DriverUnsupported, InvalidArgument, StorageError
from storagekit.fsutil import lock, locked, try_lock
from storagekit.hostinfo import backing_fs, filesystems

IMAGE = "btrfs.img"
MOUNT_DIR = "fs"
LOOP_SET_CAPACITY = 0x4C07


def _run(argv: list[str]) -> None:
    import subprocess  # mkfs and resize only: not on a container's boot

    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise DriverUnsupported("btrfs", f"{argv[0]} is not installed (btrfs-progs)") from None
    if proc.returncode != 0:
        raise StorageError(f"{' '.join(argv)} failed: {proc.stderr.strip()[:300]}")


class Volume:
    """The btrfs filesystem holding one driver home's subvolumes."""

    def __init__(self, home: str, loop_size: int | None, direct: bool | None = None) -> None:
        """direct: use the home's btrfs (True), a loopback (False), or whichever the home
        already has (None: its loopback if there is one, else direct where it is btrfs)."""
        self.home = home
        self.image = f"{home}/{IMAGE}"
        on_btrfs = backing_fs(home) == "btrfs"
        if direct is None:
            self.loop = os.path.exists(self.image) or not on_btrfs
        elif direct and not on_btrfs:
            raise InvalidArgument(f"btrfs.direct=true: {home} is not on btrfs "
                                  f"(it is on {backing_fs(home)})")
        else:
            self.loop = not direct
        #: The directory on btrfs under which the driver keeps its data.
        self.root = f"{home}/{MOUNT_DIR}" if self.loop else home
        self._loop_size = loop_size
        self._users_fd: int | None = None
        #: Unmounted by close() or release_if_idle(): the next use opens it again.
        self.closed = True

    def _locked(self) -> contextlib.AbstractContextManager[int]:
        return locked(f"{self.home}/.volume.lock")

    # ------------------------------------------------------------------ attach and mount

    def open(self) -> None:
        """Make the filesystem available (make, attach, mount or grow the loopback)."""
        self.closed = False
        if not self.loop:
            return
        if "btrfs" not in filesystems():
            raise DriverUnsupported("btrfs", "the kernel has no btrfs")
        with self._locked():
            if self._users_fd is None:
                self._users_fd = lock(self._users_path, shared=True)
            if not os.path.exists(self.image):
                self._make()
            if not self.mounted():
                self._mount()
            if self._loop_size and self._loop_size > os.path.getsize(self.image):
                self._grow(self._loop_size)
            elif os.path.exists(self._growing):
                self._finish_grow()

    @property
    def _users_path(self) -> str:
        return f"{self.home}/.volume.users"

    def _drop_user(self) -> None:
        if self._users_fd is not None:
            os.close(self._users_fd)
            self._users_fd = None

    def release_if_idle(self) -> bool:
        """Unmount the loopback if no driver has it open but this one (see the module
        docstring); this one is closed then. Whether it was unmounted."""
        if not self.loop or not self.mounted():
            return False
        with self._locked():
            self._drop_user()
            fd = try_lock(self._users_path)
            if fd is None:  # another process has it open
                self._users_fd = lock(self._users_path, shared=True)
                return False
            try:
                self._unmount()
            finally:
                os.close(fd)
        self.closed = True
        return True

    def mounted(self) -> bool:
        return os.path.isdir(self.root) and _native.is_mountpoint(self.root)

    def _make(self) -> None:
        size = self._loop_size or DEFAULT_SIZE
        partial = f"{self.image}.partial"
        with open(partial, "wb") as f:
            f.truncate(size)
        _run(["mkfs.btrfs", "-q", "-f", partial])
        os.rename(partial, self.image)

    def _mount(self) -> None:
        from storagekit.engines.thin import loopdev  # not on a boot with the fs mounted

        self._detach_stale()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        # direct I/O: the data is cached once, by btrfs, not again as pages of the image file
        dev = loopdev.attach(self.image, direct_io=True)
        try:
            # user_subvol_rm_allowed: none needed, root deletes; noatime: reads write nothing
            _native.mount(dev, self.root, "btrfs", _native.MS_NOATIME)
        except BaseException:
            loopdev.detach(dev)
            raise
        # autoclear: the device goes with the last unmount of the filesystem
        loopdev.detach(dev)

    def _detach_stale(self) -> None:
        from storagekit.engines.thin import loopdev

        for dev in self.loop_devices():
            with contextlib.suppress(OSError):
                loopdev.detach(dev)

    def loop_devices(self) -> list[str]:
        """The loop devices over this home's image."""
        from storagekit.engines.thin import loopdev

        return sorted(loopdev.loops_backed_by(self.home))

    def device(self) -> str | None:
        return _native.find_mount(self.root)["source"] if self.mounted() else None

    def _grow(self, size: int) -> None:
        # the mark says a grow is under way: one cut short (a crash between the file's
        # truncate and the filesystem's resize) is finished at the next open
        with open(self._growing, "w"):
            pass
        with open(self.image, "r+b") as f:
            f.truncate(size)
        self._finish_grow()

    @property
    def _growing(self) -> str:
        return f"{self.home}/.growing"

    def _finish_grow(self) -> None:
        for dev in self.loop_devices():
            fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
            finally:
                os.close(fd)
        _run(["btrfs", "filesystem", "resize", "max", self.root])
        os.unlink(self._growing)

    def size(self) -> int:
        """The loopback's size in bytes (0 when the home is on btrfs itself)."""
        return os.path.getsize(self.image) if self.loop else 0

    # ------------------------------------------------------------------ cleanup

    def close(self) -> None:
        """Unmount the loopback (its loop device detaches itself then)."""
        if not self.loop:
            return
        with self._locked():
            self._drop_user()
            self._unmount()
        self.closed = True

    def _unmount(self) -> None:
        if self.mounted():
            try:
                _native.umount(self.root)
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                # something still has a file open in it: the kernel finishes later
                _native.umount(self.root, _native.MNT_DETACH)
        self._detach_stale()


DEFAULT_SIZE = 10 << 30
