"""`storagekit docker-plugin serve`: storagekit as a Docker graphdriver plugin (the v1 plugin
protocol on a unix socket, for `dockerd --experimental -s NAME`; see storagekit/dockerplugin)."""

from __future__ import annotations

from argparse import Namespace

from ..dockerplugin.command import SERVE_ARGUMENTS, serve_command
from .command import command, group


@command("serve", "serve the store's driver to dockerd as the graphdriver plugin NAME until "
         "SIGTERM (example: storagekit --driver aufs docker-plugin serve; then dockerd "
         "--experimental -s storagekit-aufs)", *SERVE_ARGUMENTS)
def serve(args: Namespace) -> int:
    return serve_command(args)


COMMANDS = (group("docker-plugin", "storagekit as a Docker graphdriver plugin", serve),)
