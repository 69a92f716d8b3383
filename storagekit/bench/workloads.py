"""The measurements: one implementation of each, used by `storagekit bench` and by bench/.

Each workload runs on one contender for one round and records samples through ctx.add().
Every contender runs every workload that applies to it in the same round (the runner
interleaves them), so a figure and its baselines come from the same minutes of the machine.

The five claims of a layered store, and the I/O around them:
  disk       (1) disk used by N containers of one image, N along a curve
  deploy     (2) a container layer created and mounted as the image grows in layers and in
                 size; a container boot (create, mount, run busybox true, unmount, remove);
                 N containers started (measured with disk)
  cache      (3) page cache when N containers read the same image file
  upgrade    (4) a base image file changed in place under N mounted containers: how many see
                 it, how soon
  firstwrite (5) the first write to a big and to many small image files (copy-up vs block
                 copy-on-write), with a check that the image is unchanged
  io         sequential and random I/O in a container's root (fio), and reading an image file
  metadata   untar, walk+stat, create/unlink storm in a container's root
  datapath   layer apply and export vs GNU tar; vfs's copy vs cp -a (and reflink)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _native
from .contenders import HOST, Contender, DriverContender, du, rm_tree
from .scale import DataSets, MiB, Scale

MEMCG = Path("/sys/fs/cgroup/memory")


@dataclass(frozen=True)
class Metric:
    unit: str  # "s", "B", "MiB/s", "fraction", "bool"
    better: str  # "lower" or "higher"
    title: str


#: (workload, metric) -> what it is. report.json carries this table too.
METRICS: dict[tuple[str, str], Metric] = {
    ("disk", "disk_bytes"): Metric("B", "lower", "disk used by N containers (each wrote 4 KiB)"),
    ("deploy", "start_n_seconds"): Metric("s", "lower", "N containers created and mounted"),
    ("deploy", "layers_seconds"): Metric("s", "lower", "container layer create + mount on an "
                                         "image of L layers"),
    ("deploy", "size_seconds"): Metric("s", "lower", "container layer create + mount on an "
                                       "image of S MiB"),
    ("deploy", "boot_seconds"): Metric("s", "lower", "container boot: create, mount, run "
                                       "busybox true, unmount, remove"),
    ("cache", "cgroup_cache_bytes"): Metric("B", "lower", "page cache charged to N readers "
                                            "(memory cgroup)"),
    ("cache", "host_cached_bytes"): Metric("B", "lower", "growth of the host's Cached while N "
                                           "containers read the file"),
    ("upgrade", "seen_fraction"): Metric("fraction", "higher", "containers that see a base "
                                         "file changed under them"),
    ("upgrade", "propagate_seconds"): Metric("s", "lower", "change written until every "
                                             "container sees it"),
    ("firstwrite", "big_seconds"): Metric("s", "lower", "first write (1 byte + fsync) to the "
                                          "big image file"),
    ("firstwrite", "small_seconds"): Metric("s", "lower", "first write (1 byte + fsync) to "
                                            "every small image file"),
    ("firstwrite", "base_unchanged"): Metric("bool", "higher", "a new container still sees "
                                             "the image's original bytes"),
    ("io", "seqread_mibs"): Metric("MiB/s", "higher", "sequential read, 1 MiB blocks"),
    ("io", "seqwrite_mibs"): Metric("MiB/s", "higher", "sequential write, 1 MiB blocks"),
    ("io", "randread_mibs"): Metric("MiB/s", "higher", "random read, 4 KiB blocks"),
    ("io", "randwrite_mibs"): Metric("MiB/s", "higher", "random write, 4 KiB blocks"),
    ("io", "image_read_mibs"): Metric("MiB/s", "higher", "reading an image file, cold"),
    ("metadata", "untar_seconds"): Metric("s", "lower", "untar the small-file tarball"),
    ("metadata", "walk_seconds"): Metric("s", "lower", "walk + lstat every file"),
    ("metadata", "storm_seconds"): Metric("s", "lower", "create then unlink many empty files"),
    ("datapath", "apply_seconds"): Metric("s", "lower", "apply a layer tar (host: GNU tar -x)"),
    ("datapath", "export_seconds"): Metric("s", "lower", "export a layer tar (host: GNU tar -c)"),
    ("datapath", "copy_seconds"): Metric("s", "lower", "copy an image (vfs layer; host: cp -a)"),
    ("datapath", "reflink_copy_seconds"): Metric("s", "lower", "cp -a --reflink=always"),
}


@dataclass
class Sample:
    workload: str
    metric: str
    contender: str
    param: str
    round: int
    value: float | None
    unit: str
    note: str = ""


@dataclass
class Context:
    """What a run's workloads share."""

    workdir: Path
    scale: Scale
    data: DataSets
    drop_caches: bool = False
    reflink: bool = False
    samples: list[Sample] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # what each step took
    ids: Iterator[int] = field(default_factory=itertools.count)
    round: int = 0

    def add(self, workload: str, metric: str, c: Contender, value: float | None,
            param: object = "", note: str = "") -> None:
        self.samples.append(Sample(workload, metric, c.name, str(param), self.round,
                                   None if value is None else float(value),
                                   METRICS[(workload, metric)].unit, note))

    def fail(self, workload: str, c: Contender, error: BaseException) -> None:
        self.failures.append({"workload": workload, "contender": c.name, "round": self.round,
                              "error": f"{type(error).__name__}: {error}"})

    def new_id(self) -> str:
        return f"b{next(self.ids)}"


def prepare(ctx: Context, c: Contender) -> None:
    """The images the workloads use: "base" (busybox and the read file: what N containers
    share, boot, read and see upgraded), "img" (the same and the small files: first writes
    and metadata) and "big" (the big file); for ctr run, its containerd and busybox."""
    d = ctx.data
    if c.boots_only:
        c.start(d.bin)  # type: ignore[attr-defined]
        return
    c.image("base", [d.bin, d.read])
    c.image("img", [d.bin, d.small, d.read])
    c.image("big", [d.big])


@contextlib.contextmanager
def containers(ctx: Context, c: Contender, n: int, image: str = "base") -> Iterator[list[str]]:
    """n containers on image, mounted; released afterwards whatever happens."""
    made: list[str] = []
    roots: list[str] = []
    try:
        for _ in range(n):
            cid = ctx.new_id()
            roots.append(c.container(cid, image))
            made.append(cid)
        yield roots
    finally:
        for cid in made:
            c.release(cid)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ----------------------------------------------------------------------- (1) disk, (2) start N

def disk(ctx: Context, c: Contender) -> None:
    """One growing set of containers, measured as it passes each N of the curve: the disk
    its home grew by, and the time it took to create and mount the first N."""
    ns = sorted(ctx.scale.ns)
    os.sync()
    before = du(c.home)
    started = 0.0
    made: list[str] = []
    try:
        for n in ns:
            while len(made) < n:
                cid = ctx.new_id()
                t = time.perf_counter()
                root = c.container(cid, "base")
                started += time.perf_counter() - t
                made.append(cid)
                with open(os.path.join(root, "written-by-container"), "wb") as f:
                    f.write(os.urandom(4096))
            os.sync()
            ctx.add("disk", "disk_bytes", c, du(c.home) - before, n)
            ctx.add("deploy", "start_n_seconds", c, started, n)
    finally:
        for cid in made:
            c.release(cid)


# ----------------------------------------------------------------------- (2) deploy

def _deep_image(ctx: Context, c: Contender, layers: int) -> str:
    """An image of `layers` layers (made once per contender: each on the one below)."""
    have = getattr(c, "deep_layers", 0)
    for k in range(have + 1, layers + 1):
        c.image(f"deep{k}", [ctx.data.layer_tree(k)], f"deep{k - 1}" if k > 1 else None)
    c.deep_layers = max(have, layers)  # type: ignore[attr-defined]
    return f"deep{layers}"


def _create_mount(ctx: Context, c: Contender, image: str, check: str) -> float:
    cid = ctx.new_id()
    t = time.perf_counter()
    root = c.container(cid, image)
    took = time.perf_counter() - t
    try:
        if not os.path.exists(os.path.join(root, check)):
            raise RuntimeError(f"{check} is missing from a container of {image}")
    finally:
        c.release(cid)
    return took


def deploy(ctx: Context, c: Contender) -> None:
    if c.boots_only:
        ctx.add("deploy", "boot_seconds", c, _timed(c.boot))  # type: ignore[attr-defined]
        return
    for layers in ctx.scale.layer_counts:
        image = _deep_image(ctx, c, layers)
        ctx.add("deploy", "layers_seconds", c, _create_mount(ctx, c, image, "l0001/file"), layers)
    for size in ctx.scale.image_sizes:
        image = f"size{size // MiB}"
        if image not in c.images:
            c.image(image, [ctx.data.size_tree(size)])
        took = _create_mount(ctx, c, image, f"s{size // MiB}m/data.bin")
        ctx.add("deploy", "size_seconds", c, took, f"{size // MiB} MiB")
    ctx.add("deploy", "boot_seconds", c, _timed(lambda: _boot(ctx, c)))


def _boot(ctx: Context, c: Contender) -> None:
    with containers(ctx, c, 1) as (root,):
        pid = _native.spawn_container(root, ["/bin/busybox", "true"], ["PATH=/bin"])
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"busybox true exited {os.waitstatus_to_exitcode(status)}")


# ----------------------------------------------------------------------- (3) page cache

def evict(paths: list[str], trees: list[Path]) -> None:
    """Drop from the page cache what these files and every file under these trees hold
    (POSIX_FADV_DONTNEED): the contender's own data only, never the machine's whole cache."""
    os.sync()

    def drop(path: str) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    for p in paths:
        drop(p)
    for tree in trees:
        for dirpath, dirnames, filenames in os.walk(tree):
            # a mount below (a container's root) is reached through `paths`, not walked
            dirnames[:] = [d for d in dirnames
                           if not _native.is_mountpoint(os.path.join(dirpath, d))]
            for name in filenames:
                drop(os.path.join(dirpath, name))


def drop_all_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def host_cached() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no Cached line")


def _memcg_cache(cg: Path) -> int:
    for line in (cg / "memory.stat").read_text().splitlines():
        key, value = line.split()
        if key == "cache":
            return int(value)
    raise RuntimeError(f"{cg}/memory.stat has no cache line")


def _read_in(cg: Path | None, path: str) -> None:
    """cat path > /dev/null, in the memory cgroup cg when there is one."""
    script = 'echo $$ > "$1/cgroup.procs" && exec cat "$2" > /dev/null' if cg else \
        'exec cat "$2" > /dev/null'
    subprocess.run(["sh", "-c", script, "sh", str(cg or ""), path], check=True)


def cache(ctx: Context, c: Contender) -> None:
    n = ctx.scale.readers
    with containers(ctx, c, n) as roots:
        files = [os.path.join(r, "read", "read.bin") for r in roots]
        if ctx.drop_caches:
            drop_all_caches()
        else:
            evict(files, [c.home])
        cg = None
        if (MEMCG / "memory.stat").exists():
            cg = MEMCG / f"storagekit-bench-{os.getpid()}-{ctx.new_id()}"
            cg.mkdir()
        try:
            before = host_cached()
            for f in files:
                _read_in(cg, f)
            ctx.add("cache", "host_cached_bytes", c, host_cached() - before, n)
            if cg is not None:
                ctx.add("cache", "cgroup_cache_bytes", c, _memcg_cache(cg), n)
        finally:
            if cg is not None:
                _remove_cgroup(cg)


def _remove_cgroup(cg: Path) -> None:
    for _ in range(100):  # the readers have exited; the cgroup empties as they are reaped
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.05)


# ----------------------------------------------------------------------- (4) upgrade

UPGRADE = "read/upgrade.txt"
OLD, NEW = b"version 1\n", b"version 2\n"


def _rewrite(path: str, data: bytes) -> None:
    """Same length, in place: the file every container already has open or cached."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def upgrade(ctx: Context, c: Contender) -> None:
    n = ctx.scale.readers
    with containers(ctx, c, n) as roots:
        files = [os.path.join(r, UPGRADE) for r in roots]
        for f in files:
            if Path(f).read_bytes() != OLD:
                raise RuntimeError(f"{f} does not hold the image's content")
        with c.base_files("base") as base:
            t = time.perf_counter()
            _rewrite(os.path.join(base, UPGRADE), NEW)
            try:
                seen: set[str] = set()
                deadline = t + ctx.scale.upgrade_wait
                while len(seen) < n and time.perf_counter() < deadline:
                    seen.update(f for f in files if f not in seen and Path(f).read_bytes() == NEW)
                    if len(seen) < n:
                        time.sleep(0.005)
                took = time.perf_counter() - t
            finally:
                _rewrite(os.path.join(base, UPGRADE), OLD)
    note = f"{len(seen)} of {n} containers see the new content"
    ctx.add("upgrade", "seen_fraction", c, len(seen) / n, n, note)
    ctx.add("upgrade", "propagate_seconds", c, took if len(seen) == n else None, n, note)


# ----------------------------------------------------------------------- (5) first write

BIG_OFFSET = 12345


def _write_byte(path: str, offset: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if offset is None else 0))
    try:
        if offset is None:
            os.write(fd, b"!")
        else:
            os.pwrite(fd, b"!", offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def firstwrite(ctx: Context, c: Contender) -> None:
    big = "big/big.bin"
    with open(ctx.data.root / big, "rb") as f:
        original = os.pread(f.fileno(), 1, BIG_OFFSET)
    with containers(ctx, c, 1, "big") as (root,):
        took = _timed(lambda: _write_byte(os.path.join(root, big), BIG_OFFSET))
    ctx.add("firstwrite", "big_seconds", c, took, f"{ctx.scale.big_bytes // MiB} MiB")
    smalls = ctx.data.small_list
    with containers(ctx, c, 1, "img") as (root,):
        took = _timed(lambda: [_write_byte(os.path.join(root, p), None) for p in smalls])
    ctx.add("firstwrite", "small_seconds", c, took, f"{len(smalls)} files")
    with containers(ctx, c, 1, "big") as (big_root,), containers(ctx, c, 1, "img") as (root,):
        with open(os.path.join(big_root, big), "rb") as f:
            same = os.pread(f.fileno(), 1, BIG_OFFSET) == original
        same = same and all(
            os.path.getsize(os.path.join(root, p)) == os.path.getsize(ctx.data.root / p)
            for p in smalls)
    ctx.add("firstwrite", "base_unchanged", c, 1.0 if same else 0.0)


# ----------------------------------------------------------------------- I/O in a container

FIO_JOBS = {"seqread": ("read", "1M"), "seqwrite": ("write", "1M"),
            "randread": ("randread", "4k"), "randwrite": ("randwrite", "4k")}


def _fio(path: str, rw: str, bs: str, size: int) -> float:
    """MiB/s of one fio job (buffered, psync, fsync at the end of writes)."""
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={path}", f"--size={size}", f"--rw={rw}",
         f"--bs={bs}", "--ioengine=psync", "--end_fsync=1", "--randrepeat=0",
         "--output-format=json"], check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return job["read" if "read" in rw else "write"]["bw_bytes"] / MiB


def _python_io(path: str, rw: str, bs: str, size: int) -> float:
    """The same job without fio: sequential or random (a fixed permutation) blocks."""
    block = MiB if bs == "1M" else 4096
    count = max(1, size // block)
    order = list(range(count))
    if rw.startswith("rand"):
        order = order[::-7] + [i for i in order if i % 7]
        order = list(dict.fromkeys(order))
    buf = os.urandom(block)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        t = time.perf_counter()
        for i in order:
            if "read" in rw:
                os.pread(fd, block, i * block)
            else:
                os.pwrite(fd, buf, i * block)
        if "write" in rw:
            os.fsync(fd)
        return count * block / MiB / (time.perf_counter() - t)
    finally:
        os.close(fd)


def io(ctx: Context, c: Contender) -> None:
    run = _fio if shutil.which("fio") else _python_io
    tool = "fio" if run is _fio else "python"
    with containers(ctx, c, 1) as (root,):
        for job, (rw, bs) in FIO_JOBS.items():
            path = os.path.join(root, f"io-{job}.dat")
            if "read" in rw:
                # laid out first, then evicted everywhere it is cached: in the container's
                # view and in the files beneath it (an upper directory, a pool), which a
                # reader's own invalidation cannot reach through a union or a device
                run(path, "write", "1M", ctx.scale.io_bytes)
                if ctx.drop_caches:
                    drop_all_caches()
                else:
                    evict([path], [c.home])
            ctx.add("io", f"{job}_mibs", c, run(path, rw, bs, ctx.scale.io_bytes), note=tool)
            os.unlink(path)
        image_file = os.path.join(root, "read", "read.bin")
        if ctx.drop_caches:
            drop_all_caches()
        else:
            evict([image_file], [c.home])

        def read_all() -> None:
            with open(image_file, "rb") as f:
                while f.read(MiB):
                    pass

        took = _timed(read_all)
        ctx.add("io", "image_read_mibs", c, ctx.scale.read_bytes / MiB / took)


def metadata(ctx: Context, c: Contender) -> None:
    with containers(ctx, c, 1, "img") as (root,):
        dest = os.path.join(root, "untar")
        os.mkdir(dest)
        took = _timed(lambda: subprocess.run(["tar", "-xf", str(ctx.data.small_tar), "-C", dest],
                                             check=True))
        ctx.add("metadata", "untar_seconds", c, took, f"{ctx.scale.small_files} files")

        def walk() -> None:
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    os.lstat(os.path.join(dirpath, name))

        ctx.add("metadata", "walk_seconds", c, _timed(walk),
                f"{2 * ctx.scale.small_files} files")
        storm = os.path.join(root, "storm")
        os.mkdir(storm)

        def create_unlink() -> None:
            names = [os.path.join(storm, f"f{i}") for i in range(ctx.scale.storm_files)]
            for p in names:
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
            for p in names:
                os.unlink(p)

        ctx.add("metadata", "storm_seconds", c, _timed(create_unlink),
                f"{ctx.scale.storm_files} files")


# ----------------------------------------------------------------------- layer data paths

def datapath(ctx: Context, c: Contender) -> None:
    tarball = ctx.data.small_tar
    param = f"{ctx.scale.small_files} files"
    scratch = c.home / "datapath"
    out = c.home / "export.tar"
    if isinstance(c, DriverContender):
        lid = ctx.new_id()
        c.driver.create(lid)
        try:
            with open(tarball, "rb") as f:
                took = _timed(lambda: c.driver.apply_diff(lid, None, f))
            ctx.add("datapath", "apply_seconds", c, took, param)

            def export() -> None:
                with c.driver.diff(lid) as stream, open(out, "wb") as dst:
                    shutil.copyfileobj(stream, dst, MiB)

            ctx.add("datapath", "export_seconds", c, _timed(export), param)
        finally:
            out.unlink(missing_ok=True)
            c.driver.remove(lid)
        if c.name == "vfs":  # vfs's layer is a copy of its parent: the copy is the figure
            cid = ctx.new_id()
            took = _timed(lambda: c.driver.create_rw(cid, "img"))
            c.driver.remove(cid)
            ctx.add("datapath", "copy_seconds", c, took, "image")
        return
    scratch.mkdir()
    try:
        took = _timed(lambda: subprocess.run(["tar", "-xf", str(tarball), "-C", str(scratch)],
                                             check=True))
        ctx.add("datapath", "apply_seconds", c, took, param)
        took = _timed(lambda: subprocess.run(["tar", "-cf", str(out), "-C", str(scratch), "."],
                                             check=True))
        ctx.add("datapath", "export_seconds", c, took, param)
        out.unlink(missing_ok=True)
        src = c.home / "images" / "img"
        took = _timed(lambda: subprocess.run(["cp", "-a", "--reflink=never", str(src),
                                              str(scratch / "copy")], check=True))
        ctx.add("datapath", "copy_seconds", c, took, "image")
        if ctx.reflink:
            took = _timed(lambda: subprocess.run(["cp", "-a", "--reflink=always", str(src),
                                                  str(scratch / "reflink")], check=True))
            ctx.add("datapath", "reflink_copy_seconds", c, took, "image")
    finally:
        out.unlink(missing_ok=True)
        rm_tree(scratch)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    run: Callable[[Context, Contender], None]
    applies: Callable[[Contender], bool] = lambda c: not c.boots_only


#: In the order a round runs them.
WORKLOADS: tuple[Workload, ...] = (
    Workload("disk", "(1) disk used by N containers of one image", disk),
    Workload("deploy", "(2) deploy: create + mount as the image grows, boot", deploy,
             lambda c: True),
    Workload("cache", "(3) page cache for N containers reading one file", cache),
    Workload("upgrade", "(4) a base file changed under N running containers", upgrade),
    Workload("firstwrite", "(5) first write to image files: copy-up vs block CoW", firstwrite),
    Workload("io", "I/O in a container's root", io),
    Workload("metadata", "metadata in a container's root", metadata),
    Workload("datapath", "layer data paths: apply/export vs tar, copy vs cp -a", datapath,
             lambda c: isinstance(c, DriverContender) or c.name == HOST),
)
