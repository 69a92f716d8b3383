"""`storagekit layer`: create, mount, diff and apply layers."""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from typing import TYPE_CHECKING

from ..errors import InvalidArgument
from ..store import PARENT
from .command import arg, command, group, key_values, open_store
from .output import Progress, emit, human_size, print_json, table, timestamp

if TYPE_CHECKING:
    from ..store import Store

COMPRESS = arg("--compress", choices=["none", "gzip", "zstd"], default="none")


def _against(store: Store, args: Namespace) -> object:
    """The layer a diff compares with: --parent, else the layer's own parent (the store's
    PARENT, which it looks up itself)."""
    return store.resolve(args.parent) if args.parent else PARENT


@command("create", "create a layer",
         arg("id"),
         arg("--parent", help="parent layer (id or name)"),
         arg("--rw", action="store_true", help="a read-write (container) layer"),
         arg("--name", help="a unique name for the layer"),
         arg("--label", action="append", metavar="KEY=VALUE", help="label (repeatable)"))
def create(args: Namespace) -> int:
    with open_store(args) as store:
        parent = store.resolve(args.parent) if args.parent else None
        layer = store.create(
            args.id, parent, kind="active" if args.rw else "committed", name=args.name,
            labels=key_values(args.label, "a label"),
        )
        emit(args, layer.as_dict(), lambda: print(layer.id))
    return 0


@command("rm", "remove layers (no children, not mounted)", arg("ids", nargs="+", metavar="ID"))
def rm(args: Namespace) -> int:
    with open_store(args) as store:
        for ref in args.ids:
            store.remove(store.resolve(ref))
            if not args.json:
                print(ref)
        if args.json:
            emit(args, {"removed": args.ids}, lambda: None)
    return 0


@command("ls", "list layers", arg("--kind", choices=["committed", "active", "view"]))
def ls(args: Namespace) -> int:
    with open_store(args) as store:
        layers = store.layers(args.kind)
        emit(args, [layer.as_dict() for layer in layers], lambda: table(
            [
                (
                    layer.id, layer.parent or "-", layer.kind, layer.name or "-",
                    human_size(layer.size), timestamp(layer.created),
                    (layer.diff_id or "-")[:19],
                )
                for layer in layers
            ],
            ("ID", "PARENT", "KIND", "NAME", "SIZE", "CREATED", "DIFF ID"),
        ))
    return 0


@command("mount", "mount a layer (ref-counted) and print its path", arg("id"))
def mount(args: Namespace) -> int:
    with open_store(args) as store:
        path = store.get(store.resolve(args.id))
        emit(args, {"path": path}, lambda: print(path))
    return 0


@command("umount", "release one mount of a layer", arg("id"))
def umount(args: Namespace) -> int:
    with open_store(args) as store:
        store.put(store.resolve(args.id))
    return 0


@command("inspect", "a layer's record, driver metadata and mounts as data", arg("id"))
def inspect(args: Namespace) -> int:
    with open_store(args) as store:
        lid = store.resolve(args.id)
        data = store.layer(lid).as_dict() | {
            "metadata": store.metadata(lid),
            "mounts": [m.as_dict() for m in store.mounts(lid)],
            "mounted": store.driver.refcount(lid),
        }
        print_json(data)  # the record is data either way
    return 0


@command("apply", "apply a layer tar (tar, tar.gz, tar.zst) and print the size",
         arg("id"), arg("file", metavar="FILE|-"))
def apply(args: Namespace) -> int:
    with open_store(args) as store:
        lid = store.resolve(args.id)
        if args.file == "-":
            if sys.stdin.isatty():
                raise InvalidArgument("refusing to read a layer tar from a terminal; pipe one in")
            fd, close = sys.stdin.fileno(), False
        else:
            fd, close = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC), True
        try:
            with Progress(fd, f"applying {args.file}"):
                layer = store.apply(lid, fd)
        finally:
            if close:
                os.close(fd)
        emit(args, layer.as_dict(), lambda: print(layer.size))
    return 0


@command("diff", "export a layer's changes as an OCI layer tar",
         arg("id"),
         arg("--parent", help="compare against this layer (default: the layer's parent)"),
         arg("--full", action="store_true", help="the whole layer, as if it had no parent"),
         arg("-o", "--output", metavar="FILE",
             help="write here, whole or not at all (default: stdout)"),
         COMPRESS)
def diff(args: Namespace) -> int:
    from ..fsutil import atomic_output

    with open_store(args) as store:
        lid = store.resolve(args.id)
        parent = None if args.full and not args.parent else _against(store, args)
        if args.output in (None, "-"):
            if sys.stdout.isatty():
                raise InvalidArgument(
                    "refusing to write a tar to a terminal; use -o FILE or redirect stdout"
                )
            sys.stdout.flush()
            store.export(lid, sys.stdout.fileno(), parent, args.compress)
            return 0
        with atomic_output(args.output) as fd:
            result = store.export(lid, fd, parent, args.compress)
        emit(args, result, lambda: print(f"{args.output}: {human_size(result['bytes'])}, "
                                         f"diff ID {result['diff_id']}"))
    return 0


@command("changes", "list what changed (A added, C changed, D deleted)",
         arg("id"), arg("--parent"))
def changes(args: Namespace) -> int:
    with open_store(args) as store:
        found = store.changes(store.resolve(args.id), _against(store, args))
        emit(args, [{"path": c.path, "kind": int(c.kind)} for c in found],
             lambda: [print(str(c)) for c in found])
    return 0


@command("size", "bytes of file data changed against the parent", arg("id"), arg("--parent"))
def size(args: Namespace) -> int:
    with open_store(args) as store:
        lid = store.resolve(args.id)
        n = store.diff_size(lid, _against(store, args))
        emit(args, {"id": lid, "size": n}, lambda: print(n))
    return 0


COMMANDS = (group("layer", "create, mount, diff and apply layers",
                  create, rm, ls, mount, umount, inspect, apply, diff, changes, size),)
