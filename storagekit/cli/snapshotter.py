"""`storagekit snapshotter serve | config`: storagekit as a containerd proxy snapshotter (gRPC
on a unix socket, containerd.services.snapshots.v1.Snapshots; see storagekit/snapshotter)."""

from __future__ import annotations

from argparse import Namespace

from ..snapshotter.command import (
    DEFAULT_SOCKET_DIR,
    check_served,
    config_command,
    serve_command,
)
from .command import arg, command, group, open_store

_SOCKET = arg("--socket", metavar="PATH",
              help=f"unix socket (default: {DEFAULT_SOCKET_DIR}/snapshotter-DRIVER.sock)")


@command("serve", "serve the store's driver to containerd as the snapshotter storagekit-DRIVER "
         "until SIGTERM (example: storagekit --driver overlay snapshotter serve --socket "
         "/run/storagekit/overlay.sock)", _SOCKET,
         arg("--log-level", choices=["debug", "info", "warning", "error"], default="info",
             help="what the server logs to stderr (default: info)"))
def serve(args: Namespace) -> int:
    if args.driver is not None:  # refused before a store is made for it
        from ..registry import driver_class

        driver_class(args.driver)  # an unknown one is said to be unknown
        check_served(args.driver)
    return serve_command(open_store(args), args.socket, args.log_level)


@command("config", "print the lines containerd's config.toml needs to use the snapshotter "
         "(its proxy_plugins stanza, and the CRI line for Kubernetes)", _SOCKET)
def config(args: Namespace) -> int:
    return config_command(args)


COMMANDS = (group("snapshotter", "storagekit as a containerd snapshotter", serve, config),)
