"""The thin engine's errors cross typed: an EngineError whose kind names what went wrong, the
errno it stands for, a message in words and, in the filename slot, a file of the pool or
nothing. storagekit.engines.thin turns each kind into its exception class without reading the
message."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from thinutil import BS, new_pool

from storagekit._native import EngineError, ThinPool
from storagekit.engines import thin
from storagekit.engines.thin import engine
from storagekit.engines.thin.errors import (
    DeviceExists,
    DeviceNotFound,
    PoolBusy,
    PoolFull,
    PoolReadOnly,
    ThinError,
)
from storagekit.engines.thin.layout import PoolDir
from storagekit.errors import InvalidArgument


def engine_failure(call: Callable[[], object]) -> EngineError:
    with pytest.raises(EngineError) as e:
        call()
    return e.value


def typed_failures(tmp_path: Path) -> dict[str, list[EngineError]]:
    """Every kind of pool error, each raised by the engine for real, by kind."""
    tmp_path.mkdir(exist_ok=True)
    pool, meta, data = new_pool(tmp_path, data_mib=1, error_if_no_space=True)  # 16 blocks
    pool.message("create_thin 1")
    calls: list[Callable[[], object]] = [
        lambda: pool.message("frobnicate 1"),
        lambda: pool.message("create_thin 16777216"),
        lambda: pool.message("create_thin"),
        lambda: pool.message("set_transaction_id 7 8"),
        lambda: pool.message("release_metadata_snap"),
        lambda: pool.read(1, 2**64 - 1, 2),
        lambda: pool.message("create_thin 1"),
        lambda: pool.message("create_snap 2 9"),
        lambda: pool.message("delete 9"),
        lambda: pool.read(9, 0, 1),
        lambda: ThinPool.open(meta, data),
    ]
    found: dict[str, list[EngineError]] = {}
    for call in calls:
        e = engine_failure(call)
        found.setdefault(e.kind, []).append(e)
    pool.message("reserve_metadata_snap")
    found["busy"] = [engine_failure(lambda: pool.message("reserve_metadata_snap"))]
    pool.message("release_metadata_snap")

    def fill() -> None:
        for vb in range(17):
            pool.write(1, vb * BS, b"x")

    pool2 = None
    try:
        found["no_space"] = [engine_failure(fill)]
        pool.close()
        found["closed"] = [engine_failure(lambda: pool.devices())]
        pool2 = ThinPool.open(meta, data, read_only=True)
        found["read_only"] = [engine_failure(lambda: pool2.message("create_thin 2"))]
    finally:
        pool.close()
        if pool2 is not None:
            pool2.close()
    return found


EXPECTED = {
    # kind: (errno, class the thin engine raises for it)
    "bad_message": (errno.EINVAL, InvalidArgument),
    "bad_argument": (errno.EINVAL, InvalidArgument),
    "device_exists": (errno.EEXIST, DeviceExists),
    "no_origin": (errno.ENODATA, DeviceNotFound),
    "no_device": (errno.ENODATA, DeviceNotFound),
    "locked": (errno.EBUSY, PoolBusy),
    "busy": (errno.EBUSY, PoolBusy),
    "no_space": (errno.ENOSPC, PoolFull),
    "closed": (errno.EBADF, ThinError),
    "read_only": (errno.EROFS, PoolReadOnly),
}


def test_every_pool_error_is_typed(tmp_path):
    found = typed_failures(tmp_path)
    assert sorted(found) == sorted(EXPECTED)
    files = {str(tmp_path / "meta"), str(tmp_path / "data")}
    for kind, errors in found.items():
        for e in errors:
            assert isinstance(e, OSError) and e.errno == EXPECTED[kind][0], (kind, e)
            assert e.strerror and e.strerror == e.args[1], (kind, e)
            # The filename slot holds a file or nothing: what more there is is the message.
            assert e.filename is None or e.filename in files, (kind, e.filename)
    assert [e.strerror for e in found["bad_message"]] == [
        "not a pool message: unknown verb 'frobnicate'",
        "not a pool message: '16777216' is not a thin device id (0..16777215)",
        "not a pool message: create_thin takes 1 argument",
    ]
    assert found["no_space"][0].filename == str(tmp_path / "data")


def test_each_kind_becomes_its_class(tmp_path):
    pd = PoolDir(tmp_path)
    for kind, errors in typed_failures(tmp_path / "pool").items():
        cls = EXPECTED[kind][1]
        for e in errors:
            err = engine.engine_error(pd, "op", e)
            assert type(err) is cls, (kind, err)
            assert str(err).startswith(f"thin pool {tmp_path}: op: {e.strerror}"), str(err)
            if isinstance(err, ThinError):
                assert err.errno == e.errno


def test_an_untyped_failure_names_its_file(tmp_path):
    pd = PoolDir(tmp_path)
    missing = tmp_path / "no-such-metadata"
    with pytest.raises(FileNotFoundError) as e:
        ThinPool.open(missing, tmp_path / "data")
    assert not isinstance(e.value, EngineError)
    err = engine.engine_error(pd, "open", e.value)
    assert type(err) is ThinError and err.errno == errno.ENOENT
    assert str(err) == f"thin pool {tmp_path}: open: No such file or directory ({missing})"


def test_a_pool_open_elsewhere_is_busy(tmp_path):
    d = tmp_path / "pool"
    thin.create_pool(d, "64M")
    pd = PoolDir.at(d)
    with ThinPool.open(pd.metadata, pd.data):
        with pytest.raises(PoolBusy, match="another process has the pool open"):
            thin.message(d, "create_thin 1")
    thin.message(d, "create_thin 1")
    with pytest.raises(DeviceExists, match="thin device 1 already exists"):
        thin.message(d, "create_thin 1")
