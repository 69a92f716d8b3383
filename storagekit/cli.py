"""The storagekit command line.

    storagekit [--root DIR] [--driver NAME] [-o KEY=VALUE]... [--json] COMMAND ...

Every failure is one line on stderr and a non-zero exit status, never a traceback: library
errors (storagekit.errors), failed system calls (OSError) and bad usage all end up in main().
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import registry
from .errors import InvalidArgument, StorageError
from .store import Store, default_root

TYPE_CHECKING = False  # typing is for type checkers only: importing it slows every CLI call
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

PROG = "storagekit"


class UsageError(Exception):
    pass


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


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter. argparse makes one for every add_argument, and the stock
    one imports shutil to size itself: ~2 ms of every CLI call."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------- output helpers


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        human()


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [list(map(str, header))] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _parse_kv(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{what} must look like KEY=VALUE, not {item!r}")
        out[key] = value
    return out


class _Progress:
    """Shows how far a file has been read, on a terminal only (stderr)."""

    def __init__(self, fd: int, label: str) -> None:
        import threading  # not on a container's boot path

        self.fd, self.label = fd, label
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            st = os.fstat(fd)
            self.total = st.st_size if os.path.stat.S_ISREG(st.st_mode) else 0
        except OSError:
            self.total = 0

    def __enter__(self) -> _Progress:
        if self.total and sys.stderr.isatty():
            import threading

            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                done = os.lseek(self.fd, 0, os.SEEK_CUR)  # shares the offset the reader moves
            except OSError:
                return
            pct = 100 * done / self.total
            sys.stderr.write(f"\r{self.label}: {pct:5.1f}% of {human_size(self.total)}")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# ---------------------------------------------------------------------------- commands


def _open_store(args: argparse.Namespace) -> Store:
    return Store(args.root, args.driver, _parse_kv(args.storage_opt, "a driver option"))


def cmd_drivers(args: argparse.Namespace) -> int:
    root = args.root or default_root()
    support = registry.supports(root)
    data = [
        {"name": s.name, "supported": s.supported, "reason": s.reason, "priority": s.priority}
        for s in support
    ]
    _emit(args, data, lambda: _table(
        [(s.name, "yes" if s.supported else "no", s.reason) for s in support],
        ("DRIVER", "SUPPORTED", "WHY"),
    ))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .hostinfo import block_device

    with _open_store(args) as store:
        dev = block_device(store.root)
        status = store.status()
        layers = store.layers()
        data = {
            "root": str(store.root),
            "driver": store.driver_name,
            "backing_filesystem": dev["filesystem"],
            "block_device": dev,
            "layers": len(layers),
            "driver_status": dict(status),
        }

        def human() -> None:
            print(f"Root:               {store.root}")
            print(f"Driver:             {store.driver_name}")
            print(f"Backing filesystem: {dev['filesystem']} (mounted on {dev['mount_point']})")
            if dev.get("device"):
                print(f"Block device:       {dev['device']} (disk {dev['disk']})")
                print(f"  Model:            {dev['model']}")
                print(f"  Size:             {human_size(dev['size_bytes'])}")
                print(f"  Rotational:       {'yes' if dev['rotational'] else 'no'}")
                print(f"  I/O scheduler:    {dev['scheduler']}")
                if dev.get("loop_backing_file"):
                    print(f"  Loop backing:     {dev['loop_backing_file']}")
            else:
                print(f"Block device:       none ({dev['reason']}; {dev['device_number']})")
            print(f"Layers:             {len(layers)}")
            print("Driver status:")
            for key, value in status:
                print(f"  {key}: {value}")

        _emit(args, data, human)
    return 0


def cmd_layer_create(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        parent = store.resolve(args.parent) if args.parent else None
        layer = store.create(
            args.id, parent, kind="active" if args.rw else "committed", name=args.name,
            labels=_parse_kv(args.label, "a label"),
        )
        _emit(args, layer.as_dict(), lambda: print(layer.id))
    return 0


def cmd_layer_rm(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        for ref in args.ids:
            store.remove(store.resolve(ref))
            if not args.json:
                print(ref)
        if args.json:
            _emit(args, {"removed": args.ids}, lambda: None)
    return 0


def cmd_layer_ls(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        layers = store.layers(args.kind)
        _emit(args, [layer.as_dict() for layer in layers], lambda: _table(
            [
                (
                    layer.id, layer.parent or "-", layer.kind, layer.name or "-",
                    human_size(layer.size),
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(layer.created)),
                    (layer.diff_id or "-")[:19],
                )
                for layer in layers
            ],
            ("ID", "PARENT", "KIND", "NAME", "SIZE", "CREATED", "DIFF ID"),
        ))
    return 0


def cmd_layer_mount(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        path = store.get(store.resolve(args.id))
        _emit(args, {"path": path}, lambda: print(path))
    return 0


def cmd_layer_umount(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        store.put(store.resolve(args.id))
    return 0


def cmd_layer_inspect(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        lid = store.resolve(args.id)
        layer = store.layer(lid)
        data = layer.as_dict() | {
            "metadata": store.metadata(lid),
            "mounts": [m.as_dict() for m in store.mounts(lid)],
            "mounted": store.driver.refcount(lid),
        }
        _emit(args, data, lambda: print(json.dumps(data, indent=2, default=str)))
    return 0


def cmd_layer_apply(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        lid = store.resolve(args.id)
        if args.file == "-":
            if sys.stdin.isatty():
                raise InvalidArgument("refusing to read a layer tar from a terminal; pipe one in")
            fd, close = sys.stdin.fileno(), False
        else:
            fd, close = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC), True
        try:
            with _Progress(fd, f"applying {args.file}"):
                layer = store.apply(lid, fd)
        finally:
            if close:
                os.close(fd)
        _emit(args, layer.as_dict(), lambda: print(layer.size))
    return 0


def cmd_layer_diff(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        lid = store.resolve(args.id)
        parent: object = store.resolve(args.parent) if args.parent else (
            None if args.full else store.layer(lid).parent)
        if args.output in (None, "-"):
            if sys.stdout.isatty():
                raise InvalidArgument(
                    "refusing to write a tar to a terminal; use -o FILE or redirect stdout"
                )
            sys.stdout.flush()
            store.export(lid, sys.stdout.fileno(), parent, args.compress)
            return 0
        tmp = f"{args.output}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            result = store.export(lid, fd, parent, args.compress)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, args.output)
        _emit(args, result, lambda: print(f"{args.output}: {human_size(result['bytes'])}, "
                                          f"diff ID {result['diff_id']}"))
    return 0


def cmd_layer_changes(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        lid = store.resolve(args.id)
        parent = store.resolve(args.parent) if args.parent else store.layer(lid).parent
        changes = store.changes(lid, parent)
        _emit(args, [{"path": c.path, "kind": int(c.kind)} for c in changes],
              lambda: [print(str(c)) for c in changes])
    return 0


def cmd_layer_size(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        lid = store.resolve(args.id)
        parent = store.resolve(args.parent) if args.parent else store.layer(lid).parent
        size = store.diff_size(lid, parent)
        _emit(args, {"id": lid, "size": size}, lambda: print(size))
    return 0


def cmd_image_import(args: argparse.Namespace) -> int:
    from .image import Images

    with _open_store(args) as store:
        image = Images(store).import_image(args.source, args.name)
        _emit(args, image.as_dict(), lambda: print(image.name))
    return 0


def cmd_image_ls(args: argparse.Namespace) -> int:
    from .image import Images

    with _open_store(args) as store:
        images = Images(store)
        rows = []
        for image in images.list():
            layers = images.layers(image)
            size = sum(store.layer(lid).size for lid in layers)
            rows.append((image, len(layers), size))
        _emit(args, [i.as_dict() | {"layers": n, "size": sz} for i, n, sz in rows],
              lambda: _table(
                  [(i.name, i.id[7:19], n, human_size(sz),
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created)))
                   for i, n, sz in rows],
                  ("NAME", "ID", "LAYERS", "SIZE", "CREATED")))
    return 0


def cmd_image_rm(args: argparse.Namespace) -> int:
    from .image import Images

    with _open_store(args) as store:
        images = Images(store)
        for name in args.names:
            removed = images.remove(name)
            if not args.json:
                print(f"{name} ({len(removed)} layer{'s' * (len(removed) != 1)} removed)")
        if args.json:
            _emit(args, {"removed": args.names}, lambda: None)
    return 0


def cmd_image_export(args: argparse.Namespace) -> int:
    from .image import Images

    if args.output == "-" and sys.stdout.isatty():
        raise InvalidArgument("refusing to write an image to a terminal; use -o FILE")
    with _open_store(args) as store:
        result = Images(store).export(args.name, args.output, compression=args.compress)
        if args.output != "-":
            _emit(args, result, lambda: print(f"{result['output']}: {result['name']} "
                                              f"(manifest {result['manifest']})"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import Containers, RunSpec

    spec = RunSpec(
        image=args.image, command=args.command, name=args.name, rm=args.rm,
        hostname=args.hostname, env=args.env or [], workdir=args.workdir, user=args.user,
        user_namespace=args.userns, host_network=args.net == "host", readonly=args.read_only,
    )
    with _open_store(args) as store:
        return Containers(store).run(spec)


def cmd_ps(args: argparse.Namespace) -> int:
    from .runtime import Containers

    with _open_store(args) as store:
        containers = Containers(store).list()
        _emit(args, [c.as_dict() for c in containers], lambda: _table(
            [(c.name, c.image, " ".join(c.command)[:40], c.state if c.state != "exited" else
              f"exited ({c.exit_code if c.exit_code is not None else '?'})",
              c.pid or "-", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created)))
             for c in containers],
            ("NAME", "IMAGE", "COMMAND", "STATE", "PID", "CREATED")))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .runtime import Containers

    with _open_store(args) as store:
        containers = Containers(store)
        for name in args.names:
            containers.remove(name)
            if not args.json:
                print(name)
        if args.json:
            _emit(args, {"removed": args.names}, lambda: None)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


# ---------------------------------------------------------------------------- thin pools


def _thin_json(args: argparse.Namespace) -> bool:
    return bool(args.json or getattr(args, "thin_json", False))


def cmd_thin_create_pool(args: argparse.Namespace) -> int:
    from .engines import thin

    status = thin.create_pool(
        args.dir, args.data_size, args.metadata_size, args.block_size,
        low_water_mark=args.low_water_mark, skip_block_zeroing=args.skip_block_zeroing,
        ignore_discard=args.ignore_discard, no_discard_passdown=args.no_discard_passdown,
        error_if_no_space=args.error_if_no_space, no_space_timeout=args.no_space_timeout,
    )
    if _thin_json(args):
        print(json.dumps(status, indent=2))
    else:
        print(status["line"])
    return 0


def cmd_thin_message(args: argparse.Namespace) -> int:
    from .engines import thin

    thin.message(args.dir, " ".join(args.text))
    return 0


def cmd_thin_status(args: argparse.Namespace) -> int:
    from .engines import thin

    status = thin.status(args.dir)
    if _thin_json(args):
        print(json.dumps(status, indent=2))
    else:
        print(status["line"])
    return 0


def cmd_thin_activate(args: argparse.Namespace) -> int:
    from .engines import thin

    loop = thin.activate(args.dir, args.id, args.size)
    print(json.dumps({"id": args.id, "loop": loop}) if _thin_json(args) else loop)
    return 0


def cmd_thin_deactivate(args: argparse.Namespace) -> int:
    from .engines import thin

    thin.deactivate(args.dir, args.id)
    return 0


def cmd_thin_active(args: argparse.Namespace) -> int:
    from .engines import thin

    devices = thin.active(args.dir)
    if _thin_json(args):
        print(json.dumps({str(k): v for k, v in devices.items()}, indent=2))
    else:
        for dev_id, loop in sorted(devices.items()):
            print(f"{dev_id} {loop}")
    return 0


def cmd_thin_stop(args: argparse.Namespace) -> int:
    from .engines import thin

    thin.stop(args.dir)
    return 0


def cmd_thin_check(args: argparse.Namespace) -> int:
    from .engines import thin

    print(thin.check(args.dir, clear_needs_check=args.clear_needs_check_flag))
    return 0


def _thin_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"thin device id {text!r} is not a number")
    return int(text)


def _add_thin_commands(sub: Any) -> None:
    thin = sub.add_parser("thin", help="userspace dm-thin pools: create, message, activate")
    tsub = thin.add_subparsers(dest="thin_command", metavar="COMMAND", parser_class=_Parser)
    tsub.required = True
    sizes = "sizes take K, M, G or T suffixes"

    c = tsub.add_parser("create-pool", help=f"create a pool in a directory ({sizes})")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--data-size", default="100G", metavar="SIZE",
                   help="data file size, sparse (default 100G)")
    c.add_argument("--metadata-size", metavar="SIZE",
                   help="metadata file size (default: from the data size)")
    c.add_argument("--block-size", default="64K", metavar="SIZE",
                   help="data block size, a multiple of 64K up to 1G (default 64K)")
    c.add_argument("--low-water-mark", type=int, default=0, metavar="BLOCKS")
    for feature in ("skip-block-zeroing", "ignore-discard", "no-discard-passdown",
                    "error-if-no-space"):
        c.add_argument(f"--{feature}", action="store_true", help="dm-thin pool feature")
    c.add_argument("--no-space-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long a write waits for space when the pool is full, without "
                   "--error-if-no-space (default 60, as dm-thin's)")
    c.add_argument("--json", dest="thin_json", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_thin_create_pool)

    c = tsub.add_parser("message", help='send a pool message: "create_thin ID", '
                        '"create_snap ID ORIGIN", "delete ID", "set_transaction_id OLD NEW", '
                        '"reserve_metadata_snap", "release_metadata_snap"')
    c.add_argument("dir", metavar="DIR")
    c.add_argument("text", nargs="+", metavar="MESSAGE")
    c.set_defaults(func=cmd_thin_message)

    c = tsub.add_parser("status", help="the pool's status line, as the kernel prints it")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--json", dest="thin_json", action="store_true",
                   help="the full status with every thin device, as JSON")
    c.set_defaults(func=cmd_thin_status)

    c = tsub.add_parser("activate", help="make a thin device a loop device and print it")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("id", type=_thin_id, metavar="ID")
    c.add_argument("--size", metavar="SIZE",
                   help=f"device size ({sizes}; default: the size it had last time)")
    c.add_argument("--json", dest="thin_json", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_thin_activate)

    c = tsub.add_parser("deactivate", help="detach a thin device's loop device")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("id", type=_thin_id, metavar="ID")
    c.set_defaults(func=cmd_thin_deactivate)

    c = tsub.add_parser("active", help="active thin devices and their loop devices")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--json", dest="thin_json", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_thin_active)

    c = tsub.add_parser("stop", help="deactivate every device and stop the pool's daemon")
    c.add_argument("dir", metavar="DIR")
    c.set_defaults(func=cmd_thin_stop)

    c = tsub.add_parser("check", help="run thin_check on the pool's metadata (no device "
                        "may be active)")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--clear-needs-check-flag", action="store_true",
                   help="clear the needs_check flag when the metadata is sound")
    c.set_defaults(func=cmd_thin_check)


# ---------------------------------------------------------------------------- parser


GLOBAL_OPTIONS_WITH_VALUE = {"--root", "--driver", "-o", "--storage-opt"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the parser of that one command: argparse builds every
    subparser up front, which costs a tenth of a container boot through the CLI."""
    p = _Parser(prog=PROG, description="Container storage drivers: layers, diffs and mounts.")
    p.add_argument("--root", help="store root (default: $STORAGEKIT_ROOT or /var/lib/storagekit)")
    p.add_argument("--driver", help="storage driver (default: the one the store uses, "
                   "else the best this host supports)")
    p.add_argument("-o", "--storage-opt", action="append", metavar="KEY=VALUE",
                   help="driver option (repeatable)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, add in COMMANDS.items():
        if only is None or only == name:
            add(sub)
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


def _add_drivers(sub: Any) -> None:
    sub.add_parser("drivers", help="registered drivers and whether this host supports them"
                   ).set_defaults(func=cmd_drivers)


def _add_info(sub: Any) -> None:
    sub.add_parser("info", help="root, driver, backing filesystem and block device"
                   ).set_defaults(func=cmd_info)


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="boot busybox on every driver this host supports and "
                          "compare the drivers")
    demo.set_defaults(func=cmd_demo)


def _add_run(sub: Any) -> None:
    c = sub.add_parser("run", help="boot a command from an image in new namespaces")
    c.add_argument("--rm", action="store_true", help="remove the container when it exits")
    c.add_argument("--name", help="container name (default: a short id)")
    c.add_argument("--hostname", help="the container's hostname")
    c.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="environment")
    c.add_argument("-w", "--workdir", metavar="DIR", help="working directory in the container")
    c.add_argument("-u", "--user", metavar="UID[:GID]", help="user (and group) to run as")
    c.add_argument("--userns", action="store_true", help="also a new user namespace")
    c.add_argument("--net", choices=["none", "host"], default="none",
                   help="none: a new network namespace with loopback only (default)")
    c.add_argument("--read-only", action="store_true", help="mount the root read-only")
    c.add_argument("image")
    c.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    c.set_defaults(func=cmd_run)


def _add_ps(sub: Any) -> None:
    c = sub.add_parser("ps", help="containers kept without --rm")
    c.set_defaults(func=cmd_ps)


def _add_rm(sub: Any) -> None:
    c = sub.add_parser("rm", help="remove containers and their read-write layers")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(func=cmd_rm)


def _add_image_commands(sub: Any) -> None:
    image = sub.add_parser("image", help="import, list, export and remove images")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=_Parser)
    isub.required = True
    c = isub.add_parser("import", help="import an OCI layout, a docker save archive or a "
                        "root filesystem (directory or tar)")
    c.add_argument("source", metavar="FILE|DIR")
    c.add_argument("--name", help="image name (required for a root filesystem)")
    c.set_defaults(func=cmd_image_import)
    c = isub.add_parser("ls", help="list images")
    c.set_defaults(func=cmd_image_ls)
    c = isub.add_parser("rm", help="remove images and the layers only they use")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(func=cmd_image_rm)
    c = isub.add_parser("export", help="write an image as an OCI layout (with a docker "
                        "manifest.json) that containerd and docker load accept")
    c.add_argument("name")
    c.add_argument("-o", "--output", required=True, metavar="FILE|DIR/|-")
    c.add_argument("--compress", choices=["none", "gzip", "zstd"], default="none")
    c.set_defaults(func=cmd_image_export)


def _add_layer_commands(sub: Any) -> None:
    layer = sub.add_parser("layer", help="create, mount, diff and apply layers")
    lsub = layer.add_subparsers(dest="layer_command", metavar="COMMAND", parser_class=_Parser)
    lsub.required = True

    c = lsub.add_parser("create", help="create a layer")
    c.add_argument("id")
    c.add_argument("--parent", help="parent layer (id or name)")
    c.add_argument("--rw", action="store_true", help="a read-write (container) layer")
    c.add_argument("--name", help="a unique name for the layer")
    c.add_argument("--label", action="append", metavar="KEY=VALUE", help="label (repeatable)")
    c.set_defaults(func=cmd_layer_create)

    c = lsub.add_parser("rm", help="remove layers (no children, not mounted)")
    c.add_argument("ids", nargs="+", metavar="ID")
    c.set_defaults(func=cmd_layer_rm)

    c = lsub.add_parser("ls", help="list layers")
    c.add_argument("--kind", choices=["committed", "active", "view"])
    c.set_defaults(func=cmd_layer_ls)

    c = lsub.add_parser("mount", help="mount a layer (ref-counted) and print its path")
    c.add_argument("id")
    c.set_defaults(func=cmd_layer_mount)

    c = lsub.add_parser("umount", help="release one mount of a layer")
    c.add_argument("id")
    c.set_defaults(func=cmd_layer_umount)

    c = lsub.add_parser("inspect", help="a layer's record, driver metadata and mounts as data")
    c.add_argument("id")
    c.set_defaults(func=cmd_layer_inspect)

    c = lsub.add_parser("apply", help="apply a layer tar (tar, tar.gz, tar.zst) and print "
                        "the size")
    c.add_argument("id")
    c.add_argument("file", metavar="FILE|-")
    c.set_defaults(func=cmd_layer_apply)

    c = lsub.add_parser("diff", help="export a layer's changes as an OCI layer tar")
    c.add_argument("id")
    c.add_argument("--parent", help="compare against this layer (default: the layer's parent)")
    c.add_argument("--full", action="store_true", help="the whole layer, as if it had no parent")
    c.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    c.add_argument("--compress", choices=["none", "gzip", "zstd"], default="none")
    c.set_defaults(func=cmd_layer_diff)

    c = lsub.add_parser("changes", help="list what changed (A added, C changed, D deleted)")
    c.add_argument("id")
    c.add_argument("--parent")
    c.set_defaults(func=cmd_layer_changes)

    c = lsub.add_parser("size", help="bytes of file data changed against the parent")
    c.add_argument("id")
    c.add_argument("--parent")
    c.set_defaults(func=cmd_layer_size)


COMMANDS: dict[str, Callable[[Any], None]] = {
    "drivers": _add_drivers,
    "info": _add_info,
    "demo": _add_demo,
    "run": _add_run,
    "ps": _add_ps,
    "rm": _add_rm,
    "image": _add_image_commands,
    "layer": _add_layer_commands,
    "thin": _add_thin_commands,
}


def _describe_oserror(e: OSError) -> str:
    text = e.strerror or str(e)
    if e.filename is not None:
        text += f": {os.fsdecode(e.filename)}"
    if e.filename2 is not None:
        text += f" -> {os.fsdecode(e.filename2)}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    try:
        args = parser.parse_args(argv)
        return args.func(args)
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


if __name__ == "__main__":
    sys.exit(main())
