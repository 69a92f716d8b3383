"""The drivers side by side: what a union filesystem (aufs, overlay) and a block-level thin
pool (devicemapper) cost, every driver this host supports in the same run on the same data.
Container boot per driver is in test_boot.py.

Each driver gets two image layers under $STORAGEKIT_BENCH_DIR (so on the same filesystem):
"img" (SMALL_FILES small files and a READ_BYTES file) and "big" (one BIG_FILE_BYTES file).

Groups:
  layer creation          create_rw of a container layer on "img": a thin snapshot
                          (devicemapper), a directory (overlay, aufs) or a copy of the image
                          (vfs); baseline: `cp -a` of the image's files
  first write             one byte written (and fsynced) into the big file of "big" from a fresh
                          container: block copy-on-write (devicemapper) vs whole-file copy-up
                          (overlay, aufs); vfs copied the file when the layer was made;
                          baseline: `cp` of the file
  disk, 20 containers     20 containers made and mounted on "img", each writing 4 KiB (the
                          time: making and mounting them); extra_info: bytes the driver's home
                          grew by (du: allocated blocks,
                          sparse pool files count what they hold); baseline: the image's size
  page cache, 20 readers  20 containers mounted at once, each read of the READ_BYTES file run in
                          a memory cgroup after the page cache was dropped; extra_info: page
                          cache charged to the readers' cgroup and the host's Cached growth
                          (which also counts cache filled by daemons outside the cgroup);
                          baseline: the same file read 20 times on the host filesystem
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIG_FILE_BYTES, SCALE, SMALL_FILES, write_incompressible
from union_peers import drop_caches

from storagekit import _native, registry

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "5"))
READ_BYTES = max(1 << 20, int((100 << 20) * SCALE))
CONTAINERS = 20
DRIVERS = sorted(registry.available())
MEMCG = Path("/sys/fs/cgroup/memory")


def _du(path: Path) -> int:
    out = subprocess.run(
        ["du", "-sx", "--block-size=1", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[0])


def _fill(dst: str, src: Path) -> None:
    # a real copy, no reflinks: every driver's image holds its own data
    _native.copy_tree(str(src), dst, reflink=False)


@pytest.fixture(scope="module")
def read_tree(bench_dir: Path) -> Path:
    root = bench_dir / "read-tree"
    root.mkdir()
    write_incompressible(root / "read.bin", READ_BYTES)
    return root


class Images:
    """A driver with the two image layers."""

    def __init__(
        self, name: str, home: Path, small_tree: Path, read_tree: Path, big_tree: Path
    ) -> None:
        self.name, self.home = name, home
        self.driver = registry.driver_class(name)(home)
        self.driver.create("img")
        path = self.driver.get("img")
        try:
            _fill(os.path.join(path, "small"), small_tree)
            _fill(os.path.join(path, "shared"), read_tree)
        finally:
            self.driver.put("img")
        self.driver.create("big")
        path = self.driver.get("big")
        try:
            _fill(os.path.join(path, "data"), big_tree)
        finally:
            self.driver.put("big")
        self.serial = 0

    def new_id(self) -> str:
        self.serial += 1
        return f"c{self.serial}"


@pytest.fixture(scope="module")
def images(bench_dir: Path, small_tree: Path, read_tree: Path, big_tree: Path):
    made: dict[str, Images] = {}

    def get(name: str) -> Images:
        if name not in made:
            ok, why = registry.driver_class(name).probe(bench_dir)
            if not ok:
                pytest.skip(f"{name}: {why}")
            made[name] = Images(
                name, bench_dir / f"compare-{name}", small_tree, read_tree, big_tree
            )
        return made[name]

    yield get
    for im in made.values():
        im.driver.cleanup()


# ----------------------------------------------------------------------------- layer creation


@pytest.mark.parametrize("who", [*DRIVERS, "cp -a"])
def test_layer_creation(benchmark, images, bench_dir, small_tree, read_tree, who):
    benchmark.group = f"layer creation on a {SMALL_FILES}-file image"
    benchmark.extra_info["baseline"] = who == "cp -a"
    if who == "cp -a":
        dst = bench_dir / "cp-a"

        def copy():
            dst.mkdir()
            subprocess.run(
                ["cp", "-a", "--reflink=never", str(small_tree), str(read_tree), str(dst)],
                check=True,
            )

        benchmark.pedantic(
            copy, setup=lambda: shutil.rmtree(dst, ignore_errors=True), rounds=ROUNDS, iterations=1
        )
        shutil.rmtree(dst, ignore_errors=True)
        return
    im = images(who)
    made: list[str] = []

    def setup():
        made.append(im.new_id())
        return (made[-1],), {}

    benchmark.pedantic(
        lambda lid: im.driver.create_rw(lid, "img"), setup=setup, rounds=ROUNDS, iterations=1
    )
    for lid in made:
        im.driver.remove(lid)


# ----------------------------------------------------------------------------- first write


@pytest.mark.parametrize("who", [*DRIVERS, "cp"])
def test_first_write(benchmark, images, bench_dir, big_tree, who):
    benchmark.group = f"first write to a {BIG_FILE_BYTES >> 20} MiB image file (fsync)"
    benchmark.extra_info["baseline"] = who == "cp"
    if who == "cp":
        src, dst = big_tree / "big.bin", bench_dir / "big.copy"
        benchmark.pedantic(
            lambda: subprocess.run(["cp", str(src), str(dst)], check=True),
            setup=lambda: dst.unlink(missing_ok=True),
            rounds=3,
            iterations=1,
        )
        dst.unlink(missing_ok=True)
        return
    im = images(who)
    current: list[str] = []

    def release():
        while current:
            lid = current.pop()
            im.driver.put(lid)
            im.driver.remove(lid)

    def setup():
        release()
        lid = im.new_id()
        im.driver.create_rw(lid, "big")
        path = im.driver.get(lid)
        current.append(lid)
        return (os.path.join(path, "data", "big.bin"),), {}

    def first_write(path: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"!", 12345)
            os.fsync(fd)
        finally:
            os.close(fd)

    try:
        benchmark.pedantic(first_write, setup=setup, rounds=3, iterations=1)
    finally:
        release()


# ----------------------------------------------------------------------------- many containers


@contextlib.contextmanager
def _containers(im: Images, count: int):
    """count containers on "img", all mounted; yields their root paths."""
    ids: list[str] = []
    paths: list[str] = []
    try:
        for _ in range(count):
            lid = im.new_id()
            im.driver.create_rw(lid, "img")
            ids.append(lid)
            paths.append(im.driver.get(lid))
        yield paths
    finally:
        for lid, _ in zip(ids, paths, strict=False):
            im.driver.put(lid)
        for lid in ids:
            im.driver.remove(lid)


@pytest.mark.parametrize("who", [*DRIVERS, "image size"])
def test_disk_20_containers(benchmark, images, small_tree, read_tree, who):
    benchmark.group = f"disk used by {CONTAINERS} containers of one image"
    # the image's size is a baseline for the bytes only: its time (du) compares with nothing
    benchmark.extra_info["size_baseline"] = who == "image size"
    if who == "image size":
        size = _du(small_tree) + _du(read_tree)
        benchmark.extra_info["disk_bytes"] = size
        benchmark.pedantic(lambda: _du(small_tree) + _du(read_tree), rounds=1, iterations=1)
        return
    im = images(who)
    os.sync()
    before = _du(im.home)
    result = {}

    def run():
        with _containers(im, CONTAINERS) as paths:
            for p in paths:
                with open(os.path.join(p, "written-by-container"), "wb") as f:
                    f.write(os.urandom(4096))
            os.sync()
            result["after"] = _du(im.home)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["disk_bytes"] = result["after"] - before


def _memcg(name: str) -> Path:
    cg = MEMCG / name
    cg.mkdir()
    return cg


def _memcg_cache(cg: Path) -> int:
    for line in (cg / "memory.stat").read_text().splitlines():
        key, value = line.split()
        if key == "cache":
            return int(value)
    raise RuntimeError(f"{cg}/memory.stat has no cache line")


def _host_cached() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no Cached line")


def _read_in(cg: Path, path: str) -> None:
    subprocess.run(
        [
            "sh",
            "-c",
            'echo $$ > "$1/cgroup.procs" && exec cat "$2" > /dev/null',
            "sh",
            str(cg),
            path,
        ],
        check=True,
    )


@pytest.mark.parametrize("who", [*DRIVERS, "host file"])
def test_page_cache_20_readers(benchmark, images, read_tree, who):
    benchmark.group = (
        f"page cache when {CONTAINERS} containers read one {READ_BYTES >> 20} MiB file"
    )
    benchmark.extra_info["baseline"] = who == "host file"
    if not MEMCG.is_dir():
        pytest.fail("no cgroup v1 memory controller at /sys/fs/cgroup/memory")
    cg = _memcg(f"storagekit-bench-{os.getpid()}-{who.replace(' ', '-')}")
    try:
        if who == "host file":
            paths = [str(read_tree / "read.bin")] * CONTAINERS
            _measure(benchmark, cg, paths)
            return
        im = images(who)
        with _containers(im, CONTAINERS) as roots:
            _measure(benchmark, cg, [os.path.join(r, "shared", "read.bin") for r in roots])
    finally:
        for _ in range(50):  # the readers have exited; the cgroup empties as they are reaped
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _measure(benchmark, cg: Path, paths: list[str]) -> None:
    drop_caches()
    cached = _host_cached()
    benchmark.pedantic(lambda: [_read_in(cg, p) for p in paths], rounds=1, iterations=1)
    benchmark.extra_info["page_cache_bytes"] = _memcg_cache(cg)
    benchmark.extra_info["host_cached_growth_bytes"] = _host_cached() - cached
