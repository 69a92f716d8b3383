"""The storagekit command line.

    storagekit [--root DIR] [--driver NAME] [-o KEY=VALUE]... [--json] COMMAND ...

(the global options may also follow the command). One module per command group, each
command's arguments written beside its handler (command.py says how):

    host.py       drivers, info, demo, prune, version
    container.py  run, ps, rm
    image.py      image import | ls | rm | export
    layer.py      layer create | rm | ls | mount | umount | inspect | apply | diff | ...
    thin.py       thin create-pool | message | status | activate | ...
    dockerplugin.py  docker-plugin serve
    snapshotter.py   snapshotter serve | config
    bench.py      bench (and bench compare)
    output.py     what they all print with: --json, tables, sizes, times, progress
    command.py    the parser, the command records, the global options

Adding a group is a module with a COMMANDS tuple, and its line in GROUPS below.

Only the parser of the command a call names is built, and only its group's module imported:
argparse builds every subparser up front, which would cost a tenth of a container boot. The
modules a `run` imports (this one, command, container) are on a container's boot path and
import nothing at their top that a boot does not need (no pathlib, threading, typing,
dataclasses or subprocess; tests/cli/test_launcher.py checks it).

Every failure is one line on stderr and a non-zero exit status, never a traceback: library
errors (storagekit.errors), failed system calls (OSError) and bad usage all end up in main().
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ..errors import StorageError
from .command import (
    GLOBAL_OPTIONS_WITH_VALUE,
    PROG,
    Parser,
    UsageError,
    add_global_options,
    finish_global_options,
)

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import ModuleType

#: The command groups: module (storagekit/cli/<module>.py) -> the commands it defines, in the
#: order `storagekit --help` lists them.
GROUPS: dict[str, tuple[str, ...]] = {
    "host": ("drivers", "info", "demo", "prune", "version"),
    "container": ("run", "ps", "rm"),
    "image": ("image",),
    "layer": ("layer",),
    "thin": ("thin",),
    "dockerplugin": ("docker-plugin",),
    "snapshotter": ("snapshotter",),
    "bench": ("bench",),
}

#: command -> the module of its group
COMMANDS: dict[str, str] = {name: module for module, names in GROUPS.items() for name in names}


def group_module(module: str) -> ModuleType:
    """storagekit.cli.<module>, imported on first use."""
    return __import__(f"{__name__}.{module}", fromlist=["COMMANDS"])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the parser of that one command."""
    p = Parser(prog=PROG, description="Container storage drivers: layers, diffs and mounts.")
    p.add_argument("--version", action="version", version=f"{PROG} version {__version__}")
    add_global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module, names in GROUPS.items():
        if only is not None and only not in names:
            continue
        for cmd in group_module(module).COMMANDS:
            if only is None or cmd.name == only:
                cmd.add_to(sub)
    return p


def _command_in(argv: Sequence[str]) -> str | None:
    """The command argv names, if it is one of ours: the first word that is neither a global
    option nor its value."""
    words = iter(argv)
    for w in words:
        if w in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not w.startswith("-"):
            return w if w in COMMANDS else None
    return None


def closed_pipe() -> int:
    """The reader of our output went away (`storagekit layer ls | head -1`): not an error to
    report. Exit as a tool killed by SIGPIPE would (128 + 13), silently; stdout goes to
    /dev/null so that the exit's own flush does not fail again."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return 141


def _describe_oserror(e: OSError) -> str:
    text = e.strerror or str(e)
    if e.filename is not None:
        text += f": {os.fsdecode(e.filename)}"
    if e.filename2 is not None:
        text += f" -> {os.fsdecode(e.filename2)}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status: 0, 1 for a failure, 2 for bad usage, 130 for an
    interrupt, 70 for a bug (or the container's own status, for `run`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # as docker --version: without building a parser
        print(f"{PROG} version {__version__}")
        return 0
    try:
        args = finish_global_options(build_parser(_command_in(argv)).parse_args(argv))
        return args.func(args)
    except BrokenPipeError:
        return closed_pipe()
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: {_describe_oserror(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("STORAGEKIT_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {e} "
              "(run with STORAGEKIT_DEBUG=1 for details)", file=sys.stderr)
        return 70
