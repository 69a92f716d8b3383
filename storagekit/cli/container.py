"""The container commands: `run`, `ps` and `rm`.

`run` is a container's boot path: this module imports nothing at its top that a boot does
not need (see storagekit.cli), not even the output helpers, which `run` does not use.
"""

from __future__ import annotations

import argparse

from .command import arg, command, open_store

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from argparse import Namespace


@command(
    "run", "boot a command from an image in new namespaces",
    arg("--rm", action="store_true", help="remove the container when it exits"),
    arg("--name", help="container name (default: a short id)"),
    arg("--hostname", help="the container's hostname"),
    arg("-e", "--env", action="append", metavar="KEY=VALUE", help="environment"),
    arg("-w", "--workdir", metavar="DIR", help="working directory in the container"),
    arg("-u", "--user", metavar="UID[:GID]", help="user (and group) to run as"),
    arg("--userns", action="store_true",
        help="also a new user namespace: container ids map onto the host ids /etc/subuid "
             "and /etc/subgid give storagekit (or root); device nodes cannot be opened"),
    arg("--net", choices=["none", "host"], default="none",
        help="none: a new network namespace with loopback only (default)"),
    arg("--read-only", action="store_true", help="mount the root read-only"),
    arg("image"),
    # every word after the image is the container's, even one spelled like our options
    # (named cmd: "command" is the subcommand's own dest, which command_path reads)
    arg("cmd", nargs=argparse.REMAINDER, metavar="CMD"),
)
def run(args: Namespace) -> int:
    from ..runtime import Containers, RunSpec

    spec = RunSpec(
        image=args.image, command=args.cmd, name=args.name, rm=args.rm,
        hostname=args.hostname, env=args.env or [], workdir=args.workdir, user=args.user,
        user_namespace=args.userns, host_network=args.net == "host", readonly=args.read_only,
    )
    with open_store(args) as store:
        return Containers(store).run(spec)


@command("ps", "containers kept without --rm")
def ps(args: Namespace) -> int:
    from ..runtime import Containers
    from .output import emit, table, timestamp

    with open_store(args) as store:
        containers = Containers(store).list()
        emit(args, [c.as_dict() for c in containers], lambda: table(
            [(c.name, c.image, " ".join(c.command)[:40], c.state if c.state != "exited" else
              f"exited ({c.exit_code if c.exit_code is not None else '?'})",
              c.pid or "-", timestamp(c.created))
             for c in containers],
            ("NAME", "IMAGE", "COMMAND", "STATE", "PID", "CREATED")))
    return 0


@command("rm", "remove containers and their read-write layers",
         arg("names", nargs="+", metavar="NAME"))
def rm(args: Namespace) -> int:
    from ..runtime import Containers
    from .output import emit

    with open_store(args) as store:
        containers = Containers(store)
        for name in args.names:
            containers.remove(name)
            if not args.json:
                print(name)
        if args.json:
            emit(args, {"removed": args.names}, lambda: None)
    return 0


COMMANDS = (run, ps, rm)
