"""`docker-plugin serve`: the arguments and what they do, in one place, so that both
``python -m storagekit.dockerplugin`` and the storagekit command's ``docker-plugin`` group
call the same two functions::

    add_serve_arguments(parser)     --name, --socket, --log-level
    serve_command(args) -> int      with the global --root, --driver, -o of `args` as well

Nothing here imports aiohttp or the store until the server starts.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from storagekit.errors import InvalidArgument

PLUGIN_DIR = "/run/docker/plugins"
# Docker finds a v1 plugin by the name of its socket; keep names to what a file name and a
# `dockerd -s NAME` argument can carry.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


#: The arguments of `serve`, as (names, add_argument keywords): the storagekit command's
#: `docker-plugin serve` and `python -m storagekit.dockerplugin serve` both take these.
SERVE_ARGUMENTS: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("--name",), {"help": "plugin name, as given to dockerd -s (default: storagekit-DRIVER)"}),
    (("--socket",), {"metavar": "PATH",
                     "help": f"unix socket to serve (default: {PLUGIN_DIR}/NAME.sock, where "
                     "dockerd looks)"}),
    (("--log-level",), {"choices": ["debug", "info", "warning", "error"], "default": "info",
                        "help": "what the plugin logs to stderr (default: info)"}),
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    for names, kwargs in SERVE_ARGUMENTS:
        parser.add_argument(*names, **kwargs)


def socket_path(name: str, socket: str | None) -> str:
    return socket or f"{PLUGIN_DIR}/{name}.sock"


def serve_command(args: argparse.Namespace) -> int:
    """Open the store (args.root, args.driver, args.storage_opt as KEY=VALUE strings) and
    serve the plugin until SIGTERM. Raises StorageError (one line) when the store cannot be
    opened or the socket cannot be served."""
    from storagekit.store import default_root

    from .service import GraphDriverService, parse_options

    if args.name is not None and not _NAME.fullmatch(args.name):
        raise InvalidArgument(
            f"invalid plugin name {args.name!r}: use letters, digits, '_', '.', '-'")
    options = parse_options(list(args.storage_opt or []), "a driver option")
    # Ours at the level asked for; aiohttp's and asyncio's warnings and errors only.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("storagekit.dockerplugin").setLevel(args.log_level.upper())
    service = GraphDriverService(args.root or default_root(), args.driver, options)
    try:
        name = args.name or f"storagekit-{service.driver_name}"
        from .server import serve

        serve(service, socket_path(name, args.socket), name)
    finally:
        service.close()
    return 0
