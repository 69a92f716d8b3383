"""`storagekit demo`: the tour a new user runs first.

Builds the busybox image from Debian's busybox-static package (scripts/build-busybox-image.sh),
then, on every driver this host supports, in a throw-away store: imports the image, boots a
container that proves it is isolated (pid 1, its own hostname, writes and deletes files that
stay in its own layer), exports the container's change as an OCI layer tar and applies it to a
fresh layer, and times the steps. Prints which drivers booted and a comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import registry
from .errors import StorageError
from .image import Images
from .runtime import Containers, RunSpec
from .store import Store

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-busybox-image.sh"
PROOF = ("test $$ = 1 && echo pid1; hostname; echo demo > /root/demo.txt; rm /etc/group; "
         "grep -c . /proc/self/mountinfo")


def build_busybox(workdir: str) -> str:
    if not SCRIPT.exists():
        raise StorageError(f"{SCRIPT} is missing: run the demo from a source checkout")
    out = os.path.join(workdir, "busybox.tar")
    subprocess.run([str(SCRIPT), out], check=True)
    return out


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _tour(driver: str, root: str, busybox: str, boots: int) -> dict[str, Any]:
    times: dict[str, float] = {}
    with Store(root, driver) as store:
        t = time.perf_counter()
        Images(store).import_image(busybox, name="busybox")
        times["import"] = _ms(t)
        containers = Containers(store)
        out_path = os.path.join(root, "proof.out")
        with open(out_path, "wb") as out:
            code = containers.run(RunSpec("busybox", ["/bin/sh", "-c", PROOF], name="proof",
                                          hostname=f"demo-{driver}", stdout=out.fileno()))
        lines = Path(out_path).read_text().split()
        layer = containers.get("proof").layer
        changes = store.changes(layer)
        proved = (code == 0 and lines[:2] == ["pid1", f"demo-{driver}"]
                  and {(c.path, int(c.kind)) for c in changes} >= {("/root/demo.txt", 1),
                                                                    ("/etc/group", 2)})
        samples = []
        with open(os.devnull, "wb") as null:
            for _ in range(boots):
                t = time.perf_counter()
                containers.run(RunSpec("busybox", ["/bin/true"], rm=True, stdout=null.fileno()))
                samples.append(_ms(t))
        times["boot"] = statistics.median(samples)
        fd, tar = tempfile.mkstemp(dir=root, suffix=".tar")
        try:
            t = time.perf_counter()
            store.export(layer, fd)
            times["diff"] = _ms(t)
            os.lseek(fd, 0, os.SEEK_SET)
            t = time.perf_counter()
            copy = store.create("proof-copy", Images(store).get("busybox").top_layer, diff=fd)
            times["apply"] = _ms(t)
        finally:
            os.close(fd)
            os.unlink(tar)
        same = not store.changes(copy.id, layer)
        for i in range(5):  # what five more containers of the image cost on disk
            containers.run(RunSpec("busybox", ["/bin/true"], name=f"extra{i}"))
        disk = _disk_used(str(store.driver.home))
        for c in containers.list():
            containers.remove(c.name)
        store.remove("proof-copy")
        Images(store).remove("busybox")
        store.driver.cleanup()  # what a driver keeps between uses (btrfs: its loopback)
    return {"driver": driver, "store": root, "booted": proved, "round_trip": same, "ms": times,
            "disk_bytes": disk, "mountinfo_lines": int(lines[-1]) if lines else None}


def _disk_used(root: str) -> int:
    """Bytes allocated under root (like du -sx): a sparse file counts what it holds, a
    hardlinked inode once; mounts below root are not entered."""
    top = os.lstat(root).st_dev
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for is_dir, names in ((True, dirnames), (False, filenames)):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_dev != top:
                    continue  # a mount below root
                if is_dir:
                    kept.append(name)
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        dirnames[:] = kept
    return total


def _teardown(driver: str, root: str) -> None:
    """After a tour that failed half-way: remove what it made in its store (containers,
    images, layers, children first) and let the driver release the rest (mounts, engine
    daemons, loop devices), so that the work directory can go."""
    if not os.path.exists(os.path.join(root, "store.db")):
        return
    with contextlib.suppress(StorageError, OSError), Store(root, driver) as store:
        containers = Containers(store)
        for c in containers.list():
            with contextlib.suppress(StorageError, OSError):
                containers.remove(c.name)
        images = Images(store)
        for image in images.list():
            with contextlib.suppress(StorageError, OSError):
                images.remove(image.name)
        for layer in reversed(store.layers()):
            with contextlib.suppress(StorageError, OSError):
                store.remove(layer.id)
        store.driver.cleanup()


def _mounted_below(path: str) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


def run_demo(args: argparse.Namespace) -> int:
    """The demo, in a work directory of its own: under --root when given (made for the demo
    and removed after it if it did not exist), else under /var/tmp. Everything it made goes
    when it ends, whatever happened (a mount that cannot go keeps its directory, named)."""
    parent = args.root or "/var/tmp"
    made_parent = not os.path.exists(parent)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="storagekit-demo-", dir=parent)
    results, skipped = [], []
    try:
        busybox = build_busybox(work)
        for s in registry.supports(work):
            if not s.supported:
                skipped.append((s.name, s.reason))
                continue
            root = os.path.join(work, s.name)
            try:
                results.append(_tour(s.name, root, busybox, boots=5))
            except (StorageError, OSError) as e:
                results.append({"driver": s.name, "booted": False, "error": str(e), "ms": {}})
                _teardown(s.name, root)
    finally:
        left = _mounted_below(work)
        if left:  # never delete through a mount: say what is still there
            print(f"storagekit demo: still mounted, kept {work}: {', '.join(left)}",
                  file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
            if made_parent:
                with contextlib.suppress(OSError):
                    os.rmdir(parent)
    if args.json:
        print(json.dumps({"results": results, "skipped": dict(skipped)}, indent=2))
    else:
        _print(results, skipped)
    return 0 if results and all(r["booted"] and r.get("round_trip") for r in results) else 1


def _print(results: list[dict[str, Any]], skipped: list[tuple[str, str]]) -> None:
    ran = [r["driver"] for r in results if r["booted"]]
    print(f"busybox booted on: {', '.join(ran) or 'no driver'}")
    print("each container: pid 1, its own hostname, a file written and one deleted in its own "
          "layer only; its diff exported and applied to a fresh layer\n")
    header = ["DRIVER", "BOOT", "DIFF ROUND TRIP", "IMPORT ms", "BOOT ms", "DIFF ms",
              "APPLY ms", "DISK (image + 6 ctrs)"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["driver"], "FAILED", r["error"], "", "", "", "", ""])
            continue
        ms = r["ms"]
        rows.append([r["driver"], "ok" if r["booted"] else "FAILED",
                     "identical" if r["round_trip"] else "DIFFERS",
                     f"{ms['import']:.1f}", f"{ms['boot']:.1f}", f"{ms['diff']:.1f}",
                     f"{ms['apply']:.1f}", f"{r['disk_bytes'] / 2**20:.1f} MiB"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for name, reason in skipped:
        print(f"\n{name}: not run here ({reason})")
