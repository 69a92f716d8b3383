"""Thin pools outside the kernel: storagekit's dm-thin engine (storagekit._native.ThinPool)
in a directory, its thin devices exposed as loop devices by a per-pool daemon.

    create_pool(dir, data_size, metadata_size=None, block_size=64K, **features) -> status
    message(dir, "create_thin 1")           dm-thin pool messages
    status(dir) -> dict                     the kernel's pool status, and each device's
    activate(dir, id, size) -> "/dev/loopN"
    deactivate(dir, id)
    active(dir) -> {id: "/dev/loopN"}
    check(dir) -> thin_check's report       (only while no device is active)
    stop(dir)                               deactivate everything, stop the daemon
"""

from ...options import format_size, parse_size
from .errors import (
    DaemonError,
    DeviceBusy,
    DeviceExists,
    DeviceNotActive,
    DeviceNotFound,
    PoolBusy,
    PoolExists,
    PoolFull,
    PoolNotFound,
    PoolReadOnly,
    ThinCheckFailed,
    ThinError,
    ToolMissing,
)

# The client (with subprocess, shutil and the rest) is imported on first use: the pool's
# daemon imports this package too, and it starts with every device activation.
_CLIENT = ("activate", "active", "check", "create_pool", "daemon_pid", "deactivate",
           "default_metadata_size", "message", "status", "stop")


def __getattr__(name: str):  # noqa: ANN202
    if name in _CLIENT:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "activate", "active", "check", "create_pool", "daemon_pid", "deactivate",
    "default_metadata_size", "message", "status", "stop", "format_size", "parse_size",
    "DaemonError", "DeviceBusy", "DeviceExists", "DeviceNotActive", "DeviceNotFound",
    "PoolBusy", "PoolExists", "PoolFull", "PoolNotFound", "PoolReadOnly", "ThinCheckFailed",
    "ThinError", "ToolMissing",
]
