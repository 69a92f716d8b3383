"""The devicemapper driver's device set, as Docker's deviceset: thin devices made and deleted
in the pool inside transactions that a crash cannot leave half done.

Before a pool message that creates or deletes a device, the next transaction id and the device
are written to metadata/transaction-metadata; after the message and the device record,
`set_transaction_id old new` closes it. At start-up an open transaction (its id above the
pool's) is rolled back: the device is deleted from the pool and its record dropped. Device ids
are dm-thin's, 24 bits; deletions of devices still busy are deferred when the driver's
dm.use_deferred_deletion says so, and retried at the next start.
"""

from __future__ import annotations

import contextlib

from storagekit.engines import thin
from storagekit.errors import LayerInUse, StorageError

from .records import DeviceInfo, Records

TYPE_CHECKING = False  # lean for devicemapper's boots too, though outside storagekit/bootpath.py
if TYPE_CHECKING:
    from .backends import EngineBackend, KernelBackend

MAX_DEVICE_ID = (1 << 24) - 1


class DeviceSet:
    """The thin devices of one pool and their records."""

    def __init__(self, backend: EngineBackend | KernelBackend, records: Records,
                 deferred_deletion: bool) -> None:
        self.backend = backend
        self.records = records
        self.deferred_deletion = deferred_deletion

    def transaction_id(self) -> int:
        return int(self.backend.status()["transaction_id"])

    def _open_transaction(self, device_hash: str, device_id: int) -> tuple[int, int]:
        """Docker's openTransaction: record the next transaction id and the device before the
        pool message that creates or deletes it. Returns (old, new) transaction ids."""
        old = self.transaction_id()
        self.records.save_transaction(
            {"open_transaction_id": old + 1, "device_hash": device_hash, "device_id": device_id}
        )
        return old, old + 1

    def _forget_transaction(self, current: int) -> None:
        self.records.save_transaction(
            {"open_transaction_id": current, "device_hash": "", "device_id": 0}
        )

    def _close_transaction(self, old: int, new: int) -> None:
        self.backend.message(f"set_transaction_id {old} {new}")

    def process_pending_transaction(self) -> None:
        """Roll back a transaction a crash (or a failure) left open — its id is above the
        pool's: whether it was creating or deleting its device, the device goes, and so does
        the record that names it."""
        t = self.records.transaction()
        current = self.transaction_id()
        if t["open_transaction_id"] <= current:
            return
        gone = True
        try:
            self.backend.message(f"delete {t['device_id']}")
        except thin.DeviceNotFound:
            pass
        except (thin.ThinError, OSError):
            gone = False  # busy or failing: keep the record, the device is still there
        info = self.records.device(t["device_hash"]) if t["device_hash"] else None
        if gone and info is not None and info.device_id == t["device_id"]:
            self.records.drop_device(t["device_hash"])
        self._forget_transaction(current)

    def create(self, name: str, origin: DeviceInfo | None, size: int) -> DeviceInfo:
        """create_thin (origin None) or create_snap of origin, inside a transaction, with the
        next device id that neither our records nor the pool use."""
        used = {i.device_id for i in self.records.devices().values()}
        meta = self.records.deviceset()
        dev_id = int(meta.get("next_device_id", 1))
        for _ in range(MAX_DEVICE_ID):
            while dev_id in used or dev_id == 0:
                dev_id = dev_id % MAX_DEVICE_ID + 1
            text = (
                f"create_thin {dev_id}"
                if origin is None
                else f"create_snap {dev_id} {origin.device_id}"
            )
            old, new = self._open_transaction(name, dev_id)
            try:
                self.backend.message(text)
            except thin.DeviceExists:  # a device we do not know of holds the id: not ours
                self._forget_transaction(old)
                used.add(dev_id)
                continue
            except BaseException:  # nothing was created
                self._forget_transaction(old)
                raise
            try:
                info = DeviceInfo(dev_id, size, new, initialized=origin is not None)
                self.records.save_device(name, info)
                self._close_transaction(old, new)
            except BaseException:
                self.process_pending_transaction()  # deletes the half-made device
                raise
            meta["next_device_id"] = dev_id % MAX_DEVICE_ID + 1
            self.records.save_deviceset(meta)
            return info
        raise StorageError("the thin pool has no free device id")

    def delete(self, name: str, info: DeviceInfo) -> None:
        old, new = self._open_transaction(name, info.device_id)
        try:
            self.backend.message(f"delete {info.device_id}")
        except thin.DeviceBusy:
            self._forget_transaction(old)
            if not self.deferred_deletion:
                raise LayerInUse(name, "its thin device is still busy") from None
            info.deleted = True  # deferred deletion: retried later
            self.records.save_device(name, info)
            return
        except BaseException:
            self._forget_transaction(old)
            raise
        self.records.drop_device(name)
        self._close_transaction(old, new)

    def retry_deferred_deletions(self) -> None:
        for name, info in self.records.devices().items():
            if info.deleted:
                with contextlib.suppress(LayerInUse, thin.ThinError):
                    self.delete(name, info)
