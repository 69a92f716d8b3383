"""The boot path and its import budget: the one rule about imports in storagekit.

A container boot through the command line — ``storagekit run --rm IMAGE CMD``: the command
starts, opens the store, the driver mounts the layer, the runtime spawns the container — takes
some 40-50 ms here, and importing Python modules is the largest part of it. The modules on that
path, BOOT_PATH below, keep to one rule:

    At module level they import nothing in FORBIDDEN. Annotations are strings (``from
    __future__ import annotations``) with their imports under ``TYPE_CHECKING = False`` /
    ``if TYPE_CHECKING:`` (``from typing import TYPE_CHECKING`` would import typing);
    records are named tuples or plain classes, not dataclasses; a module that only some
    commands need (json for --json, threading for a progress display, pathlib for a Path
    property) is imported inside the function that needs it.

Every other module — image import and export, the thin engine's client and daemon, the
interfaces (snapshotter, Docker plugin, bench), the demo — is ordinary Python and uses pathlib,
dataclasses and typing as they fit.

tests/cli/test_launcher.py boots a container through the installed command on overlay, vfs,
aufs and btrfs and checks both halves: nothing in FORBIDDEN is imported, and every storagekit
module that is imported is in BOOT_PATH (a module that joins the path joins the rule). A boot on
devicemapper is outside the budget: its thin engine client is ordinary Python.
"""

#: The storagekit modules a boot on overlay, vfs, aufs or btrfs imports (storagekit/launcher.py
#: runs it; the native modules load no Python).
BOOT_PATH = frozenset({
    "storagekit",
    "storagekit.cli",
    "storagekit.cli.command",
    "storagekit.cli.container",
    "storagekit.collector",
    "storagekit.driver",
    "storagekit.errors",
    "storagekit.fsutil",
    "storagekit.hostinfo",
    "storagekit.image",
    "storagekit.layer",
    "storagekit.options",
    "storagekit.owners",
    "storagekit.records",
    "storagekit.reference",
    "storagekit.refs",
    "storagekit.registry",
    "storagekit.runtime",
    "storagekit.schema",
    "storagekit.store",
    "storagekit.streams",
    "storagekit.drivers",
    "storagekit.drivers.overlay",
    "storagekit.drivers.overlay.driver",
    "storagekit.drivers.overlay.flatten",
    "storagekit.drivers.overlay.host",
    "storagekit.drivers.overlay.mounting",
    "storagekit.drivers.vfs",
    "storagekit.drivers.vfs.driver",
    "storagekit.drivers.aufs",
    "storagekit.drivers.aufs.driver",
    "storagekit.drivers.btrfs",
    "storagekit.drivers.btrfs.changes",
    "storagekit.drivers.btrfs.driver",
    "storagekit.drivers.btrfs.ioctl",
    "storagekit.drivers.btrfs.volume",
    "storagekit.engines",
    "storagekit.engines.daemon",
    "storagekit.engines.union",
    "storagekit.engines.union.helper",
})

#: What those modules must not import: each costs a boot a millisecond or more (pathlib
#: brings urllib.parse, ipaddress and fnmatch).
FORBIDDEN = frozenset({
    "pathlib", "urllib.parse", "ipaddress", "threading", "typing", "dataclasses",
    "subprocess", "shutil", "tempfile", "importlib.metadata",
})
