"""Errors raised by storagekit's library code.

Each carries what it is about (a layer id, a path, a driver name) and reads as one line that
says what is wrong and, where there is one, what to do. The CLI prints ``str(error)`` and exits
non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storagekit error."""


class InvalidArgument(StorageError, ValueError):
    """A caller passed something that cannot be accepted (a bad id, an unknown option...)."""


class LayerNotFound(StorageError, KeyError):
    """No layer has this id (or name), or it is being made or removed."""

    def __init__(self, layer_id: str, detail: str = "") -> None:
        self.layer_id = layer_id
        super().__init__(f"layer {layer_id!r} does not exist{detail}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LayerExists(StorageError):
    """A layer (or name) with this id is already in the store."""

    def __init__(self, layer_id: str) -> None:
        self.layer_id = layer_id
        super().__init__(f"layer {layer_id!r} already exists")


class LayerInUse(StorageError):
    """The layer cannot be changed or removed now (children, mounts, a running operation)."""

    def __init__(self, layer_id: str, reason: str) -> None:
        self.layer_id = layer_id
        self.reason = reason
        super().__init__(f"layer {layer_id!r} is in use: {reason}")


class LayerNotMounted(StorageError):
    """A put (unmount) of a layer that nobody got (mounted)."""

    def __init__(self, layer_id: str) -> None:
        self.layer_id = layer_id
        super().__init__(f"layer {layer_id!r} is not mounted: a put needs a matching get")


class InvalidArchive(StorageError):
    """A layer tar stream is corrupt or hostile; nothing was written outside the layer."""

    def __init__(self, message: str, source: str | None = None) -> None:
        self.detail = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid layer archive: {message}")


class DriverNotFound(StorageError):
    """No registered storage driver has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"no storage driver named {name!r} (registered: {', '.join(sorted(known)) or 'none'})"
        )


class DriverUnsupported(StorageError):
    """The driver cannot run on this host or on this root filesystem."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"storage driver {name!r} is not supported here: {reason}")


class StoreError(StorageError):
    """The store cannot be opened or used as asked (wrong driver for the root, ...)."""


class ImageNotFound(StorageError, KeyError):
    """No image of the store has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"image {name!r} does not exist (see 'storagekit image ls')")

    def __str__(self) -> str:
        return str(self.args[0])


class ImageInUse(StorageError):
    """An image that containers use (Docker's "conflict"): removing it needs force."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"conflict: unable to remove image {name!r} (must force): {reason}")


class InvalidImage(StorageError):
    """An image archive or layout is malformed or does not match its own digests."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: invalid image: {message}")


class ContainerNotFound(StorageError, KeyError):
    """No container of the store has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"container {name!r} does not exist (see 'storagekit ps')")

    def __str__(self) -> str:
        return str(self.args[0])
