"""Finding drivers: the ``storagekit.drivers`` entry-point group.

storagekit's own drivers register there through its pyproject.toml, exactly as a third-party
package would, so every driver is found the same way.
"""

from __future__ import annotations

import os
import sys
from collections import namedtuple

from .driver import Driver
from .errors import DriverNotFound, DriverUnsupported, StorageError

GROUP = "storagekit.drivers"


def _load_all() -> tuple[dict[str, type[Driver]], dict[str, str]]:
    """Every registered driver: (classes by name, reasons by name of those that are broken)."""
    from importlib.metadata import entry_points  # scanning every distribution is slow

    drivers: dict[str, type[Driver]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # a broken third-party plugin must not break the CLI
            broken[ep.name] = f"{ep.value} does not import: {type(e).__name__}: {e}"
            continue
        if isinstance(cls, type) and issubclass(cls, Driver):
            drivers[ep.name] = cls
        else:
            broken[ep.name] = f"{ep.value} is not a storagekit Driver class"
    return drivers, broken


def available() -> dict[str, type[Driver]]:
    """Every registered driver class that loads, by name."""
    return _load_all()[0]


def broken() -> dict[str, str]:
    """Registered drivers that cannot be loaded, with the reason (as `ctr plugins ls` shows
    a plugin that failed as "error")."""
    return _load_all()[1]


def driver_class(name: str, hint: str | None = None) -> type[Driver]:
    """The driver class registered as name. `hint` ("module:Class", what class_path()
    returned earlier) is tried first: a store that knows its driver starts without scanning
    every installed distribution for entry points."""
    if hint:
        module, _, attr = hint.partition(":")
        try:
            # __import__, not importlib.import_module: importing importlib (and warnings
            # with it) would cost every CLI call ~0.5 ms.
            __import__(module)
            cls = getattr(sys.modules[module], attr)
            if isinstance(cls, type) and issubclass(cls, Driver) and cls.name == name:
                return cls
        except (ImportError, AttributeError):
            pass
    drivers, failed = _load_all()
    if name in failed:
        raise DriverUnsupported(name, f"the driver is broken: {failed[name]}")
    try:
        return drivers[name]
    except KeyError:
        raise DriverNotFound(name, list(drivers)) from None


def class_path(cls: type[Driver]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Support(namedtuple("Support", "name supported reason priority status")):
    """Whether a driver can run here. status: "supported", "unsupported" (the host or the
    root cannot carry it: reason says why) or "broken" (it does not even load)."""

    name: str
    supported: bool
    reason: str
    priority: int
    status: str
    __slots__ = ()


def supports(root: str | os.PathLike[str]) -> list[Support]:
    """Whether each registered driver can run with its home under root, best first; broken
    drivers last."""
    drivers, failed = _load_all()
    result = []
    for name, cls in drivers.items():
        try:
            ok, reason = cls.probe(root)
        except StorageError as e:
            ok, reason = False, str(e)
        except OSError as e:
            ok, reason = False, f"probe failed: {e}"
        result.append(Support(name, ok, reason, cls.priority,
                              "supported" if ok else "unsupported"))
    result.sort(key=lambda s: (-s.supported, -s.priority, s.name))
    result += [Support(name, False, reason, 0, "broken") for name, reason in sorted(failed.items())]
    return result


def best(root: str | os.PathLike[str]) -> str:
    """The name of the most preferred driver this host supports under root."""
    for s in supports(root):
        if s.supported:
            return s.name
    raise DriverUnsupported("(any)", "no registered driver is supported on this host")
