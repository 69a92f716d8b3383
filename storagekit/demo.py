"""`storagekit demo`: the tour a new user runs first.

On every driver this host supports, in a throw-away store: import a base layer from a tar,
make a read-write layer on it, change files through its mount, export the change as an OCI
layer tar, apply that tar to a fresh layer on the same base, and check that the result is
identical. Prints what ran and a comparison of the drivers.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import tempfile
import time
from typing import Any

from . import registry
from .errors import StorageError
from .store import Store


def _base_tar(files: int = 400) -> bytes:
    """A small but varied base layer: directories, files, a symlink, a hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None = None, **kw: Any) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for d in ("etc", "bin", "usr", "usr/share", "usr/share/doc", "var", "var/cache"):
            add(d, type=tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", b"storagekit-demo\n", mode=0o644)
        add("etc/os-release", b'NAME="storagekit demo"\n', mode=0o644)
        add("bin/tool", b"#!/bin/sh\necho hello\n", mode=0o755)
        add("bin/alias", type=tarfile.SYMTYPE, linkname="tool", mode=0o777)
        add("bin/hard", type=tarfile.LNKTYPE, linkname="bin/tool", mode=0o755)
        for i in range(files):
            add(f"usr/share/doc/file{i:04d}.txt", (f"document {i}\n" * (i % 50 + 1)).encode())
        for i in range(20):
            add(f"var/cache/blob{i:02d}", os.urandom(64 << 10))
    return buf.getvalue()


def _tour(driver: str, root: str, base: bytes) -> dict[str, Any]:
    times: dict[str, float] = {}

    def timed(label: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        result = fn(*a, **kw)
        times[label] = (time.perf_counter() - t) * 1000
        return result

    with Store(root, driver) as store:
        layer = timed("import base", store.create, "base", diff=io.BytesIO(base))
        timed("create rw layer", store.create, "app", "base", kind="active")
        path = store.get("app")
        try:
            with open(os.path.join(path, "etc/hostname"), "w") as f:
                f.write("changed\n")
            os.makedirs(os.path.join(path, "srv/www"))
            with open(os.path.join(path, "srv/www/index.html"), "w") as f:
                f.write("<h1>hello</h1>\n")
            os.unlink(os.path.join(path, "bin/alias"))
            shutil.rmtree(os.path.join(path, "var/cache"))
        finally:
            store.put("app")
        changes = timed("changes", store.changes, "app")
        fd, tmp = tempfile.mkstemp(prefix="storagekit-demo-", suffix=".tar")
        try:
            exported = timed("export diff", store.export, "app", fd)
            os.lseek(fd, 0, os.SEEK_SET)
            timed("apply diff", store.create, "app-copy", "base", diff=fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
        same = not store.changes("app-copy", "app")
        for lid in ("app-copy", "app", "base"):
            store.remove(lid)
    return {
        "driver": driver,
        "ok": same,
        "base_diff_id": layer.diff_id,
        "changes": len(changes),
        "diff_bytes": exported["bytes"],
        "times_ms": times,
    }


def run_demo(args: argparse.Namespace) -> int:
    base = _base_tar()
    results = []
    skipped = []
    for s in registry.supports(args.root or tempfile.gettempdir()):
        if not s.supported:
            skipped.append((s.name, s.reason))
            continue
        root = tempfile.mkdtemp(prefix=f"storagekit-demo-{s.name}-", dir="/var/tmp")
        try:
            results.append(_tour(s.name, root, base))
        except StorageError as e:
            results.append({"driver": s.name, "ok": False, "error": str(e), "times_ms": {}})
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        import json

        print(json.dumps({"results": results, "skipped": dict(skipped)}, indent=2))
    else:
        print(f"base layer: {len(base) >> 10} KiB tar; each driver: import it, change files in a "
              "read-write layer, export the diff, apply it to a new layer, compare\n")
        steps = ["import base", "create rw layer", "changes", "export diff", "apply diff"]
        header = ["DRIVER", "ROUND TRIP"] + [f"{s} (ms)" for s in steps]
        rows = [
            [r["driver"], "identical" if r["ok"] else f"FAILED {r.get('error', '')}"]
            + [f"{r['times_ms'].get(s, float('nan')):.1f}" for s in steps]
            for r in results
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        for row in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        for name, reason in skipped:
            print(f"\n{name}: not run ({reason})")
    return 0 if results and all(r["ok"] for r in results) else 1
