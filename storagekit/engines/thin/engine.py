"""Operations on an open pool, the same whether the daemon or a client (when no daemon runs)
holds it: opening with the pool's features, messages with the bookkeeping of device sizes,
the status, and the translation of the engine's OSErrors into one-line thin errors."""

from __future__ import annotations

import errno
import os

from ..._native import ThinPool
from ...errors import InvalidArgument
from .errors import (
    DeviceBusy,
    DeviceExists,
    DeviceNotFound,
    PoolBusy,
    PoolFull,
    PoolReadOnly,
    ThinError,
)
from .layout import PoolDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MESSAGES = ("create_thin <id>, create_snap <id> <origin id>, delete <id>, "
            "set_transaction_id <current> <new>, reserve_metadata_snap, release_metadata_snap")


def open_pool(pd: PoolDir, commit_interval: float = 0.0) -> ThinPool:
    config = pd.read_config()
    try:
        return ThinPool.open(pd.metadata, pd.data, commit_interval=commit_interval,
                             **config.open_options())
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise PoolBusy(f"thin pool {pd.root} is in use by another process "
                           f"(its metadata is locked)") from None
        raise engine_error(pd, "open", e) from None
    except ValueError as e:
        raise ThinError(f"thin pool {pd.root} cannot be opened: {e}") from None


def engine_error(pd: PoolDir, what: str, e: OSError) -> Exception:
    """A one-line error for a failed engine call; `what` is the message or operation."""
    detail = os.fsdecode(e.filename) if e.filename is not None else ""
    where = f"thin pool {pd.root}: {what}"
    if e.errno == errno.EINVAL:
        if detail.strip() == what.strip():
            return InvalidArgument(f"{where}: not a pool message (expected one of {MESSAGES}; "
                                   f"ids 0..16777215)")
        return InvalidArgument(f"{where}: {detail}")
    if e.errno == errno.EEXIST:
        return DeviceExists(f"{where}: the thin device already exists")
    if e.errno == errno.ENODATA:
        if "origin" in detail:
            return DeviceNotFound(f"{where}: the origin device does not exist")
        return DeviceNotFound(f"{where}: no such thin device")
    if e.errno == errno.ENOSPC:
        return PoolFull(f"{where}: the pool is out of space ({detail})")
    if e.errno == errno.EROFS:
        return PoolReadOnly(f"{where}: the pool is read-only (its metadata needs a check: "
                            f"storagekit thin check {pd.root})")
    if e.errno == errno.EBUSY:
        return PoolBusy(f"{where}: {detail or os.strerror(e.errno)}")
    text = e.strerror or os.strerror(e.errno or 0)
    return ThinError(f"{where}: {text}" + (f" ({detail})" if detail else ""), e.errno)


def parse_ids(text: str) -> tuple[str, list[int]]:
    """The verb and the device ids of a message, for bookkeeping only (the engine validates).
    Ids that are not numbers come back as -1."""
    words = text.split()
    if not words:
        return "", []
    ids = []
    if words[0] in ("create_thin", "create_snap", "delete"):
        for w in words[1:3]:
            ids.append(int(w) if w.isdigit() else -1)
    return words[0], ids


def send_message(pool: ThinPool, pd: PoolDir, text: str, active: set[int]) -> None:
    """Run one pool message and commit, as dm-thin does after every message: once this
    returns, the change survives a crash. Refuses to delete an active device (EBUSY, as
    dm-thin does for an open one) and keeps devices.json in step: a snapshot inherits its
    origin's size, a deleted device loses its size."""
    verb, ids = parse_ids(text)
    if verb == "delete" and ids and ids[0] in active:
        raise DeviceBusy(f"thin pool {pd.root}: {text}: thin device {ids[0]} is active; "
                         f"deactivate it first")
    try:
        pool.message(text)
    except OSError as e:
        raise engine_error(pd, text, e) from None
    try:
        pool.commit()
    except OSError as e:
        raise engine_error(pd, "commit", e) from None
    if verb in ("create_thin", "create_snap", "delete") and ids:
        sizes = pd.read_sizes()
        new = dict(sizes)
        new.pop(ids[0], None)
        if verb == "create_snap" and len(ids) > 1 and ids[1] in sizes:
            new[ids[0]] = sizes[ids[1]]
        if new != sizes:
            pd.write_sizes(new)


def status(pool: ThinPool, pd: PoolDir, active: dict[int, str], daemon: int | None) -> dict:
    """The kernel-style pool status, with each thin device's status, size and loop device."""
    try:
        out: dict[str, Any] = dict(pool.status())
        sizes = pd.read_sizes()
        devices = []
        for dev in pool.devices():
            d: dict[str, Any] = dict(pool.device_status(dev))
            d["size"] = sizes.get(dev)
            d["loop"] = active.get(dev)
            devices.append(d)
    except OSError as e:
        raise engine_error(pd, "status", e) from None
    out["pool"] = str(pd.root)
    out["data_block_bytes"] = pool.block_size
    out["daemon"] = daemon
    out["thin_devices"] = devices
    return out
