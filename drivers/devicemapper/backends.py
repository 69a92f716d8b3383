"""Where the devicemapper driver's thin pool lives.

EngineBackend: storagekit's own thin engine (storagekit.engines.thin): a pool directory, its devices
activated as loop devices over FUSE files by a per-pool daemon. Used wherever the kernel has
no device-mapper — this machine included.

KernelBackend: the kernel's dm-thin through /dev/mapper/control (dmioctl): a thin-pool target
over two loop devices (loop-lvm) or an existing pool (dm.thinpooldev), one thin target per
active device. It cannot run on a host without device-mapper; its tables and messages are
unit-tested.

Both offer the same few operations the driver needs.
"""

from __future__ import annotations

from collections.abc import Callable

from storagekit.engines import thin

from . import dmioctl

TYPE_CHECKING = False  # lean for devicemapper's boots too, though outside storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any


def parse_pool_status(line: str) -> dict[str, Any]:
    """The kernel's thin-pool status line: "<transaction id> <used meta>/<total meta>
    <used data>/<total data> <held root|-> ro|rw|out_of_data_space ..."."""
    f = line.split()
    if len(f) < 5 or f[0] == "Fail":
        raise thin.ThinError(f"thin pool status: {line!r}")
    um, tm = f[1].split("/")
    ud, td = f[2].split("/")
    return {
        "transaction_id": int(f[0]),
        "used_metadata_blocks": int(um),
        "total_metadata_blocks": int(tm),
        "used_data_blocks": int(ud),
        "total_data_blocks": int(td),
        "held_metadata_root": None if f[3] == "-" else int(f[3]),
        "mode": f[4],
        "needs_check": "needs_check" in f[5:],
        "line": line,
    }


class EngineBackend:
    kind = "engine"

    def __init__(self, pool_dir: str) -> None:
        self.pool_dir = pool_dir

    def message(self, text: str) -> None:
        thin.message(self.pool_dir, text)

    def status(self) -> dict[str, Any]:
        return thin.status(self.pool_dir)

    def activate(self, dev_id: int, size: int) -> str:
        return thin.activate(self.pool_dir, dev_id, size)

    def deactivate(self, dev_id: int) -> None:
        thin.deactivate(self.pool_dir, dev_id)

    def active(self) -> dict[int, str]:
        return thin.active(self.pool_dir)

    def stop(self) -> None:
        thin.stop(self.pool_dir)


class KernelBackend:
    kind = "kernel"

    def __init__(self, pool_name: str, dm: Any, prefix: str) -> None:
        self.pool_name, self.dm, self.prefix = pool_name, dm, prefix
        self.pool_dev = f"/dev/mapper/{pool_name}"
        self.deferred_removal = False

    @classmethod
    def loop_pool(
        cls,
        pool_name: str,
        data_file: str,
        metadata_file: str,
        block_sectors: int,
        data_bytes: int,
        dm: Any = None,
        attach: Callable[[str], str] | None = None,
    ) -> KernelBackend:
        """A loop-lvm pool as Docker made it: the two sparse files on loop devices, a
        thin-pool target over them (low water mark: 1% of the blocks)."""
        dm = dm or dmioctl.KernelDm()
        attach = attach or _losetup
        meta_dev, data_dev = attach(metadata_file), attach(data_file)
        blocks = data_bytes // (block_sectors * 512)
        table = dmioctl.thin_pool_table(
            data_bytes // 512, meta_dev, data_dev, block_sectors, max(1, blocks // 100)
        )
        dm.create(pool_name)
        dm.load(pool_name, [table])
        dm.resume(pool_name)
        return cls(pool_name, dm, pool_name.removesuffix("-pool"))

    def message(self, text: str) -> None:
        self.dm.message(self.pool_name, text)

    def status(self) -> dict[str, Any]:
        (target,) = self.dm.status(self.pool_name)
        return parse_pool_status(target.params)

    def _name(self, dev_id: int) -> str:
        return f"{self.prefix}-{dev_id}"

    def activate(self, dev_id: int, size: int) -> str:
        name = self._name(dev_id)
        self.dm.create(name)
        self.dm.load(name, [dmioctl.thin_table(size // 512, self.pool_dev, dev_id)])
        self.dm.resume(name)
        return f"/dev/mapper/{name}"

    def deactivate(self, dev_id: int) -> None:
        self.dm.remove(self._name(dev_id), deferred=self.deferred_removal)

    def active(self) -> dict[int, str]:
        return {}  # the kernel keeps them: the driver's records say which it activated

    def stop(self) -> None:
        pass


def _losetup(path: str) -> str:
    import subprocess  # the kernel backend's loop-lvm only

    return subprocess.run(
        ["losetup", "--find", "--show", path], check=True, capture_output=True, text=True
    ).stdout.strip()
