"""`storagekit bench`: the drivers compared on this disk, with a report; `storagekit bench
compare A/ B/`: two reports side by side (see storagekit/bench)."""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from pathlib import Path

from .command import UsageError, arg, command, key_values

HELP = ("compare the drivers on a directory's disk (--dir) or a whole device it formats "
        "(--device), writing report.json, report.md, report.html and samples.csv; "
        "`bench compare A/ B/` sets two reports side by side")


@command(
    "bench", HELP,
    arg("words", nargs="*", metavar="compare A B",
        help="compare two report directories instead of running"),
    arg("--dir", type=Path, help="run everything under this directory (on its disk)"),
    arg("--device", help="format this whole device and run on it (needs --mkfs and "
        "--destroy-data; twice if it is mounted or holds a partition table)"),
    arg("--mkfs", choices=("ext4", "xfs", "btrfs"), help="filesystem for --device"),
    arg("--destroy-data", action="count", default=0,
        help="agree that --device is wiped (twice: even if it is mounted or partitioned)"),
    arg("--drivers", default="vfs,overlay,aufs,devicemapper",
        help="comma-separated drivers (default: all four)"),
    arg("--quick", action="store_const", dest="scale", const="quick",
        help="small data sets and curves: a few minutes (the default)"),
    arg("--full", action="store_const", dest="scale", const="full",
        help="the sizes a paper would use: 20k files, 1 GiB files, up to 500 layers"),
    arg("--scale", choices=("tiny", "quick", "full"), help=argparse.SUPPRESS),
    arg("--rounds", type=int, help="rounds per workload (default: 3 quick, 5 full)"),
    arg("--only", help="comma-separated workloads to run (default: all): disk, deploy, "
        "cache, upgrade, firstwrite, io, metadata, datapath"),
    arg("--drop-caches", action="store_true",
        help="drop the whole machine's page cache before cache and I/O measurements "
        "(default: evict only the run's own files)"),
    arg("-o", "--out", type=Path, help="report directory (default: ./storagekit-bench-report)"),
)
def bench(args: Namespace) -> int:
    if args.words:
        return _compare(args)
    from ..bench import runner
    from ..bench.workloads import WORKLOADS

    if (args.dir is None) == (args.device is None):
        raise UsageError("give --dir DIR or --device /dev/X (one of them)")
    if args.rounds is not None and args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    known = [w.name for w in WORKLOADS]
    only = tuple(args.only.split(",")) if args.only else tuple(known)
    bad = [w for w in only if w not in known]
    if bad:
        raise UsageError(f"unknown workload {bad[0]!r} (known: {', '.join(known)})")
    drivers = tuple(d for d in args.drivers.split(",") if d)
    # -o/--storage-opt KEY=VALUE: each goes to the drivers that know the key (dm.blocksize=...)
    storage_opts = key_values(args.storage_opt, "storage option")
    out = (args.out or Path("storagekit-bench-report")).absolute()
    opts = runner.Options(dir=args.dir.absolute() if args.dir else Path(), out=out,
                          drivers=drivers, scale=args.scale or "quick", rounds=args.rounds,
                          drop_caches=args.drop_caches, workloads=only,
                          storage_opts=storage_opts,
                          argv=["storagekit", *sys.argv[1:]])
    if args.device:
        from ..bench import device

        if args.mkfs is None:
            raise UsageError("--device needs --mkfs ext4|xfs|btrfs")
        with device.formatted(args.device, args.mkfs, args.destroy_data) as (mnt, facts):
            opts.dir, opts.device = mnt, facts
            report = runner.run(opts)
    else:
        report = runner.run(opts)
    if report["interrupted"]:
        print(f"storagekit: interrupted: partial report in {out}", file=sys.stderr)
        return 130
    failed = len(report["failures"])
    print(f"report: {out}/report.html" + (f" ({failed} steps failed: see the report)"
                                          if failed else ""))
    return 0


def _compare(args: Namespace) -> int:
    from ..bench import compare

    if len(args.words) != 3 or args.words[0] != "compare":
        raise UsageError("usage: storagekit bench compare A/ B/ [-o OUT]")
    out = (args.out or Path("storagekit-bench-compare")).absolute()
    compare.write(Path(args.words[1]), Path(args.words[2]), out)
    print(f"comparison: {out}/compare.html")
    return 0


COMMANDS = (bench,)
