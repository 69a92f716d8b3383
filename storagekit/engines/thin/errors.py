"""Errors of thin pools and their devices: one line each, naming the pool and what to do.

All are storagekit.errors.StorageError (the CLI prints them as one line); each also carries
the errno it stands for (or None), so that callers can react without parsing text.
"""

from __future__ import annotations

import errno as _errno

from ...errors import InvalidArgument, StorageError


class ThinError(StorageError):
    errno: int | None = None

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class PoolNotFound(ThinError):
    errno = _errno.ENOENT


class PoolExists(ThinError):
    errno = _errno.EEXIST


class PoolBusy(ThinError):
    """Another process holds the pool, or the operation needs the pool at rest."""

    errno = _errno.EBUSY


class PoolFull(ThinError):
    errno = _errno.ENOSPC


class PoolReadOnly(ThinError):
    errno = _errno.EROFS


class DeviceNotFound(ThinError):
    errno = _errno.ENODATA


class DeviceExists(ThinError):
    errno = _errno.EEXIST


class DeviceBusy(ThinError):
    """The device is active (or its loop device is in use) and cannot be changed now."""

    errno = _errno.EBUSY


class DeviceNotActive(ThinError):
    errno = _errno.ENXIO


class DaemonError(ThinError):
    """The pool's daemon could not be started, or stopped answering."""

    errno = _errno.EIO


class ThinCheckFailed(ThinError):
    errno = _errno.EUCLEAN


class ToolMissing(ThinError):
    errno = _errno.ENOENT


# The types a daemon's error reply may name (see protocol.py).
BY_NAME: dict[str, type[ThinError]] = {
    cls.__name__: cls
    for cls in (ThinError, PoolNotFound, PoolExists, PoolBusy, PoolFull, PoolReadOnly,
                DeviceNotFound, DeviceExists, DeviceBusy, DeviceNotActive, DaemonError,
                ThinCheckFailed, ToolMissing)
}


# The kinds of the engine's typed errors (storagekit._native.EngineError.kind, listed in
# csrc/thin/error.hpp) and the exception each one is; a kind not listed is a ThinError.
BY_KIND: dict[str, type[StorageError]] = {
    "bad_message": InvalidArgument,
    "bad_argument": InvalidArgument,
    "device_exists": DeviceExists,
    "no_device": DeviceNotFound,
    "no_origin": DeviceNotFound,
    "no_space": PoolFull,
    "read_only": PoolReadOnly,
    "busy": PoolBusy,
    "locked": PoolBusy,
}
