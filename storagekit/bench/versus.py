"""The "AUFS vs device mapper" section: the two drivers point by point, each difference beside
the mechanism behind it (file copy-up vs block copy-on-write, one page cache vs one per
device), from the run's own figures."""

from __future__ import annotations

from typing import Any

A, D = "aufs", "devicemapper"

#: workload -> (metric the point is made with, param to use or None for the largest,
#:              the mechanism behind the difference)
POINTS: list[tuple[str, str, str | None, str]] = [
    ("disk", "disk_bytes", None,
     "aufs keeps a container's changes as whole files in its own branch directory: a 4 KiB "
     "write costs 4 KiB (plus a directory). devicemapper gives each container a thin snapshot "
     "of the image's device: the first write to a block allocates a whole pool block "
     "(dm.blocksize, 64 KiB by default) and the container's filesystem adds journal and "
     "metadata blocks of its own."),
    ("deploy", "layers_seconds", None,
     "an aufs mount stacks one branch per image layer, so its cost grows with the depth; a "
     "thin snapshot is flat whatever the image's history (one metadata update in the pool), "
     "then a filesystem mount of the new device."),
    ("deploy", "size_seconds", None,
     "neither copies the image to make a container: aufs adds an empty branch, devicemapper "
     "a snapshot that shares every block; both stay flat as the image grows (vfs does not)."),
    ("deploy", "boot_seconds", "",
     "a boot is create + mount + run + unmount + remove: aufs's branch directory and union "
     "mount against devicemapper's snapshot, filesystem mount and device teardown."),
    ("cache", "host_cached_bytes", None,
     "aufs's containers read the image file from the one shared lower branch: its pages are "
     "cached once for all of them. Every devicemapper container reads through its own "
     "filesystem on its own device, so each caches its own copy of the same blocks."),
    ("upgrade", "seen_fraction", None,
     "aufs's branches are directories every union reads through, so a file changed in the "
     "base branch shows in the containers that have not copied it up. A thin snapshot froze "
     "the image's blocks when it was made: a change to the origin never reaches it."),
    ("firstwrite", "big_seconds", None,
     "aufs copies the whole file up to the container's branch before the first write "
     "(time grows with the file's size); devicemapper copies one pool block, whatever the "
     "file's size."),
    ("firstwrite", "small_seconds", None,
     "for many small files both pay per file: aufs a copy-up each (a create, a data copy, "
     "attributes), devicemapper a block allocation for each block the writes touch, plus its "
     "filesystem's metadata."),
    ("io", "seqwrite_mibs", "",
     "after copy-up, aufs's I/O goes to a plain file on the branch's filesystem; "
     "devicemapper's goes through a filesystem on a thin device, each new block mapped and "
     "allocated in the pool."),
    ("io", "image_read_mibs", "",
     "reading an image file: aufs reads the lower branch's file; devicemapper reads blocks "
     "of the snapshot that map to the image's blocks in the pool."),
    ("metadata", "walk_seconds", None,
     "an aufs lookup may search every branch top-down (and whiteouts hide lower names); "
     "devicemapper's metadata is that of an ordinary filesystem on the device."),
    ("datapath", "apply_seconds", None,
     "aufs applies a layer tar straight into the layer's branch directory (its native diff); "
     "devicemapper has no such directory: the tar goes through the mounted device, and an "
     "export compares whole trees."),
]


def _figure(report: dict[str, Any], contender: str, workload: str, metric: str,
            param: str | None) -> dict[str, Any] | None:
    figs = [f for f in report["figures"] if f["contender"] == contender
            and f["workload"] == workload and f["metric"] == metric and f["median"] is not None]
    if param is not None:
        figs = [f for f in figs if f["param"] == param]
    if not figs:
        return None
    # the largest parameter: the end of a curve shows the mechanism most plainly
    return max(figs, key=lambda f: _param_key(f["param"]))


def _param_key(param: str) -> float:
    head = param.split()[0] if param else "0"
    try:
        return float(head)
    except ValueError:
        return 0.0


def backend(report: dict[str, Any], name: str) -> str:
    """What carries the driver in this run (kernel aufs or the union engine; kernel dm-thin
    or the thin engine), from the driver's status."""
    for c in report["contenders"]:
        if c["name"] == name:
            status = c.get("status") or {}
            for key in ("Backend", "Pool Backend"):
                if key in status:
                    return str(status[key])
            return ", ".join(f"{k}: {v}" for k, v in list(status.items())[:3]) or "-"
    return "not run"


def points(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per point: both figures (or None), devicemapper's as a multiple of aufs's."""
    rows = []
    for workload, metric, param, why in POINTS:
        a = _figure(report, A, workload, metric, param)
        d = _figure(report, D, workload, metric, a["param"] if a else param)
        ratio = d["median"] / a["median"] if a and d and a["median"] else None
        rows.append({"workload": workload, "metric": metric, "aufs": a, "devicemapper": d,
                     "param": (a or d or {}).get("param", ""), "dm_over_aufs": ratio,
                     "mechanism": why})
    return rows
