"""`storagekit thin`: userspace dm-thin pools (storagekit.engines.thin) — create a pool, send
it dm-thin's messages, activate its thin devices as loop devices."""

from __future__ import annotations

import argparse
from argparse import Namespace

from .command import arg, command, group
from .output import emit, human_size, table

SIZES = "sizes take K, M, G or T suffixes"
POOL = arg("dir", metavar="DIR")


def _thin_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"thin device id {text!r} is not a number")
    return int(text)


DEVICE = arg("id", type=_thin_id, metavar="ID")
FEATURES = ("skip-block-zeroing", "ignore-discard", "no-discard-passdown", "error-if-no-space")


@command(
    "create-pool", f"create a pool in a directory ({SIZES})",
    POOL,
    arg("--data-size", default="100G", metavar="SIZE",
        help="data file size, sparse (default 100G)"),
    arg("--metadata-size", metavar="SIZE",
        help="metadata file size (default: from the data size)"),
    arg("--block-size", default="64K", metavar="SIZE",
        help="data block size, a multiple of 64K up to 1G (default 64K)"),
    arg("--low-water-mark", type=int, default=0, metavar="BLOCKS"),
    *(arg(f"--{feature}", action="store_true", help="dm-thin pool feature")
      for feature in FEATURES),
    arg("--no-space-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long a write waits for space when the pool is full, without "
        "--error-if-no-space (default 60, as dm-thin's)"),
)
def create_pool(args: Namespace) -> int:
    from ..engines import thin

    status = thin.create_pool(
        args.dir, args.data_size, args.metadata_size, args.block_size,
        low_water_mark=args.low_water_mark, skip_block_zeroing=args.skip_block_zeroing,
        ignore_discard=args.ignore_discard, no_discard_passdown=args.no_discard_passdown,
        error_if_no_space=args.error_if_no_space, no_space_timeout=args.no_space_timeout,
    )
    emit(args, status, lambda: print(status["line"]))
    return 0


@command(
    "message", 'send a pool message: "create_thin ID", "create_snap ID ORIGIN", "delete ID", '
    '"set_transaction_id OLD NEW", "reserve_metadata_snap", "release_metadata_snap"',
    POOL, arg("text", nargs="+", metavar="MESSAGE"),
)
def message(args: Namespace) -> int:
    from ..engines import thin

    thin.message(args.dir, " ".join(args.text))
    return 0


@command("status", "the pool's status line, as the kernel prints it (with --json: the full "
         "status with every thin device)", POOL)
def status(args: Namespace) -> int:
    from ..engines import thin

    found = thin.status(args.dir)
    emit(args, found, lambda: _print_status(found))
    return 0


def _print_status(s: dict) -> None:
    """The pool's status, labelled (the kernel's status line last, as dmsetup prints it)."""
    block = s["data_block_bytes"]

    def used(a: int, b: int) -> str:
        return f"{a} / {b} ({100 * a / b:.1f}%)" if b else f"{a} / {b}"

    data = used(s["used_data_blocks"], s["total_data_blocks"])
    rows = [
        ("Pool", s["pool"]),
        ("Transaction ID", s["transaction_id"]),
        ("Data blocks", f"{data}, {human_size(block)} each: "
                        f"{human_size(s['used_data_blocks'] * block)} of "
                        f"{human_size(s['total_data_blocks'] * block)} used"),
        ("Metadata blocks", used(s["used_metadata_blocks"], s["total_metadata_blocks"])),
        ("Mode", s["mode"] + (", needs check" if s["needs_check"] else "")),
        ("Discards", s["discards"]),
        ("When full", s["no_space"]),
        ("Low water mark", f"{s['low_water_mark']} blocks"
                           + (" (reached)" if s["low_water_mark_reached"] else "")),
        ("Held metadata root", "-" if s["held_metadata_root"] is None
                               else s["held_metadata_root"]),
        ("Daemon", s["daemon"] or "not running"),
        ("Thin devices", len(s["thin_devices"])),
        ("Status line", s["line"]),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"{key + ':':<{width}}{value}")
    if s["thin_devices"]:
        print()
        table([(d["id"], d["mapped_blocks"], human_size(d["mapped_blocks"] * block),
                human_size(d["size"]) if d["size"] else "-", d["loop"] or "-")
               for d in s["thin_devices"]],
              ("ID", "MAPPED BLOCKS", "MAPPED", "SIZE", "LOOP"))


@command("activate", "make a thin device a loop device and print it",
         POOL, DEVICE,
         arg("--size", metavar="SIZE",
             help=f"device size ({SIZES}; default: the size it had last time)"))
def activate(args: Namespace) -> int:
    from ..engines import thin

    loop = thin.activate(args.dir, args.id, args.size)
    emit(args, {"id": args.id, "loop": loop}, lambda: print(loop))
    return 0


@command("deactivate", "detach a thin device's loop device", POOL, DEVICE)
def deactivate(args: Namespace) -> int:
    from ..engines import thin

    thin.deactivate(args.dir, args.id)
    return 0


@command("active", "active thin devices and their loop devices", POOL)
def active(args: Namespace) -> int:
    from ..engines import thin

    devices = thin.active(args.dir)
    emit(args, {str(k): v for k, v in devices.items()},
         lambda: [print(f"{dev_id} {loop}") for dev_id, loop in sorted(devices.items())])
    return 0


@command("stop", "deactivate every device and stop the pool's daemon", POOL)
def stop(args: Namespace) -> int:
    from ..engines import thin

    thin.stop(args.dir)
    return 0


@command("check", "run thin_check on the pool's metadata (no device may be active)",
         POOL,
         arg("--clear-needs-check-flag", action="store_true",
             help="clear the needs_check flag when the metadata is sound"))
def check(args: Namespace) -> int:
    from ..engines import thin

    print(thin.check(args.dir, clear_needs_check=args.clear_needs_check_flag))
    return 0


COMMANDS = (group("thin", "userspace dm-thin pools: create, message, activate",
                  create_pool, message, status, activate, deactivate, active, stop, check),)
