"""How a command group defines its commands, and the options every command takes.

A command is its handler with its arguments written above it, as ctr's commands carry their
flags and their action together:

    @command("mount", "mount a layer (ref-counted) and print its path", arg("id"))
    def mount(args: Namespace) -> int:
        ...

and a command with subcommands is a `group()` of such commands. A group module lists its
top-level commands in COMMANDS; storagekit.cli builds the parser of the one a call names.

The global options (--root, --driver, -o/--storage-opt, --json) are read before the command
and after it, at every level: `storagekit --json layer ls`, `storagekit layer ls --json` and
`storagekit layer --json ls` are the same call. A command that spells one of them its own
way (`layer diff -o FILE`) keeps its own; the global is then spelled long (--storage-opt).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import InvalidArgument

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, NoReturn

    from ..store import Store

    Arg = tuple[tuple[str, ...], dict[str, Any]]
    Handler = Callable[[argparse.Namespace], int]

PROG = "storagekit"


class UsageError(Exception):
    """Bad usage: a one-line message, exit status 2."""


def _terminal_columns() -> int:
    """What shutil.get_terminal_size() gives argparse, without importing shutil (and the
    compression modules it imports): $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter. argparse makes one for every add_argument, and the stock
    one imports shutil to size itself: ~2 ms of every CLI call."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageError (main() prints them as one line)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------- commands


def arg(*names: str, **kwargs: Any) -> Arg:
    """One argument of a command, as add_argument() takes it."""
    return names, kwargs


class Command:
    """A command: its name, its one-line help, its arguments, and either the handler that
    runs it or its subcommands."""

    __slots__ = ("name", "help", "args", "run", "subcommands")

    def __init__(self, name: str, help: str, args: Sequence[Arg] = (),
                 run: Handler | None = None, subcommands: Sequence[Command] = ()) -> None:
        self.name, self.help, self.args = name, help, tuple(args)
        self.run, self.subcommands = run, tuple(subcommands)

    def __call__(self, args: argparse.Namespace) -> int:
        assert self.run is not None, f"{self.name} is a group"
        return self.run(args)

    def __repr__(self) -> str:
        return f"Command({self.name!r})"

    def add_to(self, sub: Any) -> Parser:
        """Add this command's parser (and its subcommands') to a subparsers action."""
        parser: Parser = sub.add_parser(self.name, help=self.help)
        for names, kwargs in self.args:
            parser.add_argument(*names, **kwargs)
        if self.subcommands:
            # dest as before the package: "layer_command", "image_command", "thin_command"
            subs = parser.add_subparsers(dest=f"{self.name}_command", metavar="COMMAND",
                                         parser_class=Parser)
            subs.required = True
            for c in self.subcommands:
                c.add_to(subs)
        else:
            parser.set_defaults(func=self)
        add_global_options(parser, after_command=True)
        return parser


def command(name: str, help: str, *args: Arg) -> Callable[[Handler], Command]:
    """Decorate a handler into the command `name` with these arguments."""

    def make(run: Handler) -> Command:
        return Command(name, help, args, run)

    return make


def group(name: str, help: str, *subcommands: Command) -> Command:
    """A command whose subcommands are these (`storagekit layer create`, ...)."""
    return Command(name, help, subcommands=subcommands)


# ---------------------------------------------------------------------------- global options


GLOBAL_OPTIONS: tuple[Arg, ...] = (
    arg("--root", help="store root (default: $STORAGEKIT_ROOT or /var/lib/storagekit)"),
    arg("--driver", help="storage driver (default: the one the store uses, else the best "
        "this host supports)"),
    arg("-o", "--storage-opt", action="append", metavar="KEY=VALUE",
        help="driver option (repeatable)"),
    arg("--json", action="store_true", help="print machine-readable JSON"),
)

#: The global options followed by a value (which may look like a command: `--root run`).
GLOBAL_OPTIONS_WITH_VALUE = frozenset(
    name for names, kwargs in GLOBAL_OPTIONS if kwargs.get("action") != "store_true"
    for name in names
)

# Each parser level reads storage options into a dest of its own, so that those after the
# command add to those before it: argparse parses a subcommand into a fresh namespace and
# copies it over its parent's, so with one dest the later list would replace the earlier.
_LEVEL_STORAGE_OPT = "storage_opt "


def add_global_options(parser: Parser, *, after_command: bool = False) -> None:
    """The global options, on the top parser (with their defaults) or on a command's
    (after_command: without defaults, so that what was given before the command stays)."""
    if not after_command:
        for names, kwargs in GLOBAL_OPTIONS:
            parser.add_argument(*names, **kwargs)
        return
    options = parser.add_argument_group("global options (also before the command)")
    for names, kwargs in GLOBAL_OPTIONS:
        kwargs = dict(kwargs, default=argparse.SUPPRESS)
        if kwargs.get("action") == "append":
            kwargs["dest"] = _LEVEL_STORAGE_OPT + parser.prog
        _add_unless_taken(options, names, kwargs)


def _add_unless_taken(options: Any, names: Sequence[str], kwargs: dict[str, Any]) -> None:
    """Add the option under those of its names the command does not use itself."""
    try:
        options.add_argument(*names, **kwargs)
    except argparse.ArgumentError:  # the command has one of these names: the rest, each
        for name in names:
            try:
                options.add_argument(name, **kwargs)
            except argparse.ArgumentError:
                continue


def finish_global_options(args: argparse.Namespace) -> argparse.Namespace:
    """Gather the storage options given at every level into args.storage_opt, in order."""
    levels = [key for key in vars(args) if key.startswith(_LEVEL_STORAGE_OPT)]
    for key in levels:
        args.storage_opt = (args.storage_opt or []) + getattr(args, key)
        delattr(args, key)
    return args


# ---------------------------------------------------------------------------- shared by groups


def key_values(items: Iterable[str] | None, what: str) -> dict[str, str]:
    """["a=1", "b="] -> {"a": "1", "b": ""}; anything without "=" is InvalidArgument."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{what} must look like KEY=VALUE, not {item!r}")
        out[key] = value
    return out


#: The commands that make a store where there is none (as docker's daemon makes its data root
#: on first use); every other command on a root that does not exist says so instead of making
#: an empty store there (`storagekit --root /typo info`).
#: (`demo`, `bench` and `docker-plugin serve` make their stores without open_store.)
CREATING_COMMANDS = frozenset({"run", "image import", "layer create", "snapshotter serve"})


def command_path(args: argparse.Namespace) -> str:
    """The command a call runs, as its words: "run", "image import", "thin status"."""
    words = [args.command]
    while (sub := getattr(args, f"{words[-1]}_command", None)) is not None:
        words.append(sub)
    return " ".join(words)


def store_root(args: argparse.Namespace) -> str:
    """The store root the call names (--root, else $STORAGEKIT_ROOT, else the default),
    checked: an empty one is bad usage, a missing one only for the commands that make it."""
    from ..layer import default_root

    if args.root == "":
        raise UsageError("--root must not be empty")
    root = args.root if args.root is not None else default_root()
    if not os.path.isdir(root) and command_path(args) not in CREATING_COMMANDS:
        from ..errors import StoreError

        raise StoreError(f"no store at {root}: the commands that make one are "
                         "'image import', 'run' and 'layer create' (or give --root)")
    return root


def open_store(args: argparse.Namespace) -> Store:
    """The store the global options name. As every command opens it, containers whose
    runtime was killed are finished here (their mounts released, --rm ones removed): the next
    command after a kill, whatever it is, leaves nothing of them."""
    from ..store import Store

    store = Store(store_root(args), args.driver,
                  key_values(args.storage_opt, "a driver option"))
    try:
        if store.has_schema("containers"):
            from ..runtime import reap_dead

            reap_dead(store)
    except BaseException:
        store.close()
        raise
    return store
