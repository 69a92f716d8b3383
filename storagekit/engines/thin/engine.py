"""Operations on an open pool, the same whether the daemon or a client (when no daemon runs)
holds it: opening with the pool's features, messages with the bookkeeping of device sizes,
the status, and the translation of the engine's OSErrors into one-line thin errors."""

from __future__ import annotations

import os

from ..._native import EngineError, ThinPool
from .errors import BY_KIND, DeviceBusy, ThinError
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
        raise engine_error(pd, "open", e) from None
    except ValueError as e:
        raise ThinError(f"thin pool {pd.root} cannot be opened: {e}") from None


def engine_error(pd: PoolDir, what: str, e: OSError) -> Exception:
    """A one-line error for a failed engine call; `what` is the message or operation. The
    engine's typed errors (EngineError) become the class their kind names, saying what the
    engine says; any other OSError failed on a file and becomes a ThinError naming it."""
    where = f"thin pool {pd.root}: {what}"
    if isinstance(e, EngineError):
        cls = BY_KIND.get(e.kind, ThinError)
        text = f"{where}: {e.strerror}{_hint(pd, e.kind)}"
        return ThinError(text, e.errno) if cls is ThinError else cls(text)
    detail = os.fsdecode(e.filename) if e.filename is not None else ""
    text = e.strerror or os.strerror(e.errno or 0)
    return ThinError(f"{where}: {text}" + (f" ({detail})" if detail else ""), e.errno)


def _hint(pd: PoolDir, kind: str) -> str:
    """What to do about an error of this kind, said after it."""
    if kind == "bad_message":
        return f" (expected one of {MESSAGES})"
    if kind == "read_only":
        return f" (its metadata needs a check: storagekit thin check {pd.root})"
    return ""


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
