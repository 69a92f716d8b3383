"""The devicemapper driver's own metadata, as Docker's devicemapper kept it:

    metadata/base                  the base device: {"device_id", "size", "transaction_id",
                                    "initialized", "deleted"}
    metadata/layers/<layer id>     a layer's device, the same fields
    metadata/parents/<layer id>    the id of the layer's parent (empty: none)
    metadata/deviceset-metadata    {"next_device_id", "BaseDeviceUUID", "BaseDeviceFilesystem"}
    metadata/transaction-metadata  {"open_transaction_id", "device_hash", "device_id"}

Every file is written to a temporary name, fsynced and renamed, so a crash leaves the old or
the new version, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

from storagekit.fsutil import atomic_write

TYPE_CHECKING = False  # lean for devicemapper's boots too, though outside storagekit/bootpath.py
if TYPE_CHECKING:
    from typing import Any

# The base device's name in records and transactions: not a valid layer id, so no layer can
# take it.
BASE = ".base"


class DeviceInfo:
    """A device's record (Docker's devInfo). A plain class: dataclasses would cost every
    CLI call on this driver the import of inspect and ast."""

    __slots__ = ("device_id", "size", "transaction_id", "initialized", "deleted")

    def __init__(self, device_id: int, size: int, transaction_id: int,
                 initialized: bool = False, deleted: bool = False) -> None:
        self.device_id = device_id
        self.size = size
        self.transaction_id = transaction_id
        self.initialized = initialized
        self.deleted = deleted

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceInfo) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"DeviceInfo({fields})"


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data))



class Records:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers = root / "layers"
        self.parents = root / "parents"
        for d in (root, self.layers, self.parents):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / "base" if name == BASE else self.layers / name

    def device(self, name: str) -> DeviceInfo | None:
        try:
            return DeviceInfo(**json.loads(self._path(name).read_text()))
        except FileNotFoundError:
            return None

    def save_device(self, name: str, info: DeviceInfo) -> None:
        write_json(self._path(name), info.as_dict())

    def drop_device(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def devices(self) -> dict[str, DeviceInfo]:
        """Every device record, the base's (as BASE) included."""
        out = {}
        for name in [BASE, *(p.name for p in self.layers.iterdir() if not p.name.startswith("."))]:
            info = self.device(name)
            if info is not None:
                out[name] = info
        return out

    def parent(self, name: str) -> str | None:
        try:
            return self.parents.joinpath(name).read_text() or None
        except FileNotFoundError:
            return None

    def save_parent(self, name: str, parent: str | None) -> None:
        atomic_write(self.parents / name, parent or "")

    def drop_parent(self, name: str) -> None:
        self.parents.joinpath(name).unlink(missing_ok=True)

    def deviceset(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "deviceset-metadata").read_text())
        except FileNotFoundError:
            return {"next_device_id": 1}

    def save_deviceset(self, data: dict[str, Any]) -> None:
        write_json((self.root / "deviceset-metadata"), data)

    def transaction(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "transaction-metadata").read_text())
        except FileNotFoundError:
            return {"open_transaction_id": 0, "device_hash": "", "device_id": 0}

    def save_transaction(self, data: dict[str, Any]) -> None:
        write_json((self.root / "transaction-metadata"), data)
