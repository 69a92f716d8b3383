"""The devicemapper driver's own metadata, as Docker's devicemapper kept it:

    metadata/<layer id>            {"device_id", "size", "transaction_id", "initialized",
                                    "deleted"}; the base device's file is "base"
    metadata/deviceset-metadata    {"next_device_id", "BaseDeviceUUID", "BaseDeviceFilesystem"}
    metadata/transaction-metadata  {"open_transaction_id", "device_hash", "device_id"}

Every file is written to a temporary name, fsynced and renamed, so a crash leaves the old or
the new version, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASE = "base"


@dataclass
class DeviceInfo:
    device_id: int
    size: int
    transaction_id: int
    initialized: bool = False
    deleted: bool = False


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class Records:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name

    def device(self, name: str) -> DeviceInfo | None:
        try:
            return DeviceInfo(**json.loads(self._path(name).read_text()))
        except FileNotFoundError:
            return None

    def save_device(self, name: str, info: DeviceInfo) -> None:
        write_json(self._path(name), asdict(info))

    def drop_device(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def devices(self) -> dict[str, DeviceInfo]:
        special = {"deviceset-metadata", "transaction-metadata"}
        out = {}
        for p in self.root.iterdir():
            if p.name.startswith(".") or p.name in special:
                continue
            info = self.device(p.name)
            if info is not None:
                out[p.name] = info
        return out

    def deviceset(self) -> dict[str, Any]:
        try:
            return json.loads(self._path("deviceset-metadata").read_text())
        except FileNotFoundError:
            return {"next_device_id": 1}

    def save_deviceset(self, data: dict[str, Any]) -> None:
        write_json(self._path("deviceset-metadata"), data)

    def transaction(self) -> dict[str, Any]:
        try:
            return json.loads(self._path("transaction-metadata").read_text())
        except FileNotFoundError:
            return {"open_transaction_id": 0, "device_hash": "", "device_id": 0}

    def save_transaction(self, data: dict[str, Any]) -> None:
        write_json(self._path("transaction-metadata"), data)
