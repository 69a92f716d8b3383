"""python -m storagekit.dockerplugin [--root R] [--driver D] [-o K=V]... serve [--name NAME]
[--socket PATH] — the plugin on its own (the storagekit command's `docker-plugin serve` runs
the same command.serve_command)."""

from __future__ import annotations

import argparse
import os
import sys

from storagekit.errors import StorageError

from .command import add_serve_arguments, serve_command

PROG = "python -m storagekit.dockerplugin"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="storagekit as a Docker graphdriver "
                                "plugin (dockerd --experimental -s NAME)")
    p.add_argument("--root", help="store root (default: $STORAGEKIT_ROOT or /var/lib/storagekit)")
    p.add_argument("--driver", help="storage driver (default: the one the store uses, else the "
                   "best this host supports)")
    p.add_argument("-o", "--storage-opt", action="append", metavar="KEY=VALUE",
                   help="driver option (repeatable)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve the plugin on a unix socket"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return serve_command(args)
    except StorageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"{PROG}: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("STORAGEKIT_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {e} "
              "(run with STORAGEKIT_DEBUG=1 for details)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
