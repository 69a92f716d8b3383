"""What `storagekit snapshotter serve` and `snapshotter config` do (storagekit/cli/snapshotter.py
holds their arguments and opens the store as every command does).

Nothing here imports grpcio until `serve` starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from storagekit.store import Store

DEFAULT_SOCKET_DIR = "/run/storagekit"


def plugin_name(driver: str) -> str:
    """The proxy plugin's name in containerd's config: storagekit-<driver>."""
    return f"storagekit-{driver}"


def default_socket(driver: str) -> str:
    return f"{DEFAULT_SOCKET_DIR}/snapshotter-{driver}.sock"


def _driver(args: argparse.Namespace) -> str:
    """The driver serve will use: --driver, else the one the store records, else the best
    this host supports (what Store itself would choose, read without opening it)."""
    if args.driver:
        return args.driver
    from storagekit import registry
    from storagekit.store import default_root

    root = os.path.abspath(args.root or default_root())
    db = f"{root}/store.db"
    if os.path.exists(db):
        import sqlite3

        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'driver'").fetchone()
        except sqlite3.Error:
            row = None
        finally:
            con.close()
        if row:
            return str(row[0])
    return registry.best(root)


#: The drivers the snapshotter serves: those whose mounts, whiteouts, in-use checks and
#: clean-up containerd's test suite and tests/containerd have proven. btrfs is not among
#: them yet (its standing loopback and its subvolume binds are not handled here).
SERVED_DRIVERS = ("vfs", "overlay", "aufs", "devicemapper")


def check_served(driver: str) -> None:
    """InvalidArgument unless the snapshotter serves this driver."""
    if driver not in SERVED_DRIVERS:
        from ..errors import InvalidArgument

        raise InvalidArgument(
            f"the containerd snapshotter does not serve the {driver} driver yet (it serves "
            f"{', '.join(SERVED_DRIVERS)}); use another --root for it")


def serve_command(store: Store, socket: str | None, log_level: str) -> int:
    """Serve the store until SIGTERM (socket: default_socket of its driver); closes it."""
    from .server import serve
    from .service import SnapshotService

    try:
        check_served(store.driver_name)
    except BaseException:
        store.driver.cleanup()  # what opening the store brought up (btrfs: its loopback)
        store.close()
        raise

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("storagekit.snapshotter").setLevel(log_level.upper())
    service = SnapshotService(store)
    try:
        serve(service, socket or default_socket(service.driver_name),
              plugin_name(service.driver_name))
    finally:
        service.close()
    return 0


def config_text(driver: str, socket: str) -> str:
    """What containerd's config.toml needs to use the snapshotter, and Kubernetes's CRI."""
    name = plugin_name(driver)
    return (f"""# containerd config.toml (version 2): storagekit's {driver} driver as a snapshotter
[proxy_plugins.{name}]
  type = "snapshot"
  address = "{socket}"

# and for Kubernetes (the CRI plugin) to use it for every pod:
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{name}"
""")


def config_command(args: argparse.Namespace) -> int:
    driver = _driver(args)
    print(config_text(driver, os.path.abspath(args.socket or default_socket(driver))), end="")
    return 0
