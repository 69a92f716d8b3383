"""storagekit's union filesystem engine (userspace aufs over FUSE) against the kernel's
overlayfs, fuse-overlayfs and unionfs-fuse, on the same data in the same run.

Groups (kernel overlay is the baseline of each; ratios are baseline time / contender time):
  sequential read 1 GiB lower file       page cache dropped before each round
  find -ls over 50,000 files in 5 layers  fresh mount, warm page cache of the branches
  first write to a 1 GiB lower file       copy-up; kernel overlay fsyncs it (also: volatile)
  10,000 small-file copy-ups             one appended byte per lower file
  untar 20,000 files into the mount
  lookup through N branches               storagekit only: stat of a file in the bottom branch
  unmount                                 stop() of a union against umount of kernel overlay
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIG_FILE_BYTES, SCALE, SMALL_FILES
from union_peers import CONTENDERS, Union, available, drop_caches

from storagekit import _native
from storagekit.engines import union

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "3"))
FIND_FILES = max(500, int(50_000 * SCALE))
COPYUPS = max(100, int(10_000 * SCALE))


def contenders(extra: list[str] | None = None):
    return pytest.mark.parametrize("who", CONTENDERS + (extra or []))


def _skip_missing(who: str) -> str:
    base = who.replace(" volatile", "")
    if not available(base):
        pytest.skip(f"{base} is not installed")
    return base


def _timed(
    benchmark,
    who: str,
    lowers: list[Path],
    work: Path,
    fn,
    *,
    fresh=True,
    before=None,
    volatile=False,
):
    base = _skip_missing(who)
    benchmark.extra_info["baseline"] = who == "kernel overlay"
    u = Union(base, lowers, work / who.replace(" ", "-"), volatile=volatile)
    state = {"mounted": False}

    def setup():
        if state["mounted"]:
            u.unmount()
        u.mount()
        state["mounted"] = True
        if before:
            before()

    os.sync()  # the data sets were just written: their writeback must not land on one contender
    try:
        benchmark.pedantic(lambda: fn(u.mnt), setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        if state["mounted"]:
            u.unmount()
        u.cleanup()


@pytest.fixture(scope="module")
def big_lower(bench_dir: Path, big_tree: Path) -> Path:
    return big_tree


@contenders()
def test_sequential_read(benchmark, big_lower, bench_dir, who):
    benchmark.group = f"sequential read of a {BIG_FILE_BYTES >> 20} MiB lower file"

    def read(mnt: Path):
        fd = os.open(mnt / "big.bin", os.O_RDONLY)
        buf = bytearray(1 << 20)
        try:
            while os.readv(fd, [buf]):
                pass
        finally:
            os.close(fd)

    _timed(benchmark, who, [big_lower], bench_dir, read, before=drop_caches)


@pytest.fixture(scope="module")
def five_layers(bench_dir: Path) -> list[Path]:
    layers = []
    per = FIND_FILES // 5
    for n in range(5):
        root = bench_dir / f"find-layer{n}"
        for i in range(per):
            d = root / f"dir{i % 100:02d}"
            if i < 100:
                d.mkdir(parents=True)
            (d / f"l{n}-f{i}").write_bytes(b"x" * 100)
        layers.append(root)
    return layers


@contenders()
def test_find_stat(benchmark, five_layers, bench_dir, who):
    benchmark.group = f"find -ls over {FIND_FILES} files in 5 layers"
    _timed(
        benchmark,
        who,
        five_layers,
        bench_dir,
        lambda mnt: subprocess.run(
            ["find", str(mnt), "-ls"], check=True, stdout=subprocess.DEVNULL
        ),
    )


@contenders(["kernel overlay volatile"])
def test_first_write_big(benchmark, big_lower, bench_dir, who):
    benchmark.group = f"first write to a {BIG_FILE_BYTES >> 20} MiB lower file"

    def write(mnt: Path):
        fd = os.open(mnt / "big.bin", os.O_WRONLY)
        os.pwrite(fd, b"!", 4096)
        os.close(fd)

    _timed(benchmark, who, [big_lower], bench_dir, write, volatile=who.endswith("volatile"))


@pytest.fixture(scope="module")
def small_lower(bench_dir: Path) -> Path:
    root = bench_dir / "copyup-lower"
    for i in range(COPYUPS):
        d = root / f"d{i % 100:02d}"
        if i < 100:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(b"y" * 512)
    return root


@contenders()
def test_small_copyups(benchmark, small_lower, bench_dir, who):
    benchmark.group = f"{COPYUPS} small-file copy-ups"
    names = [f"d{i % 100:02d}/f{i}" for i in range(COPYUPS)]

    def append(mnt: Path):
        for n in names:
            fd = os.open(mnt / n, os.O_WRONLY | os.O_APPEND)
            os.write(fd, b"+")
            os.close(fd)

    _timed(benchmark, who, [small_lower], bench_dir, append)


@contenders()
def test_untar(benchmark, small_tree, bench_dir, who):
    benchmark.group = f"untar {SMALL_FILES} files into the mount"
    tar = bench_dir / "untar.tar"
    if not tar.exists():
        subprocess.run(["tar", "-cf", str(tar), "-C", str(small_tree), "."], check=True)
    empty = bench_dir / "empty-lower"
    empty.mkdir(exist_ok=True)
    _timed(
        benchmark,
        who,
        [empty],
        bench_dir,
        lambda mnt: subprocess.run(["tar", "-xf", str(tar), "-C", str(mnt)], check=True),
    )


@pytest.fixture(scope="module")
def many_branches(bench_dir: Path) -> list[Path]:
    branches = []
    for i in range(1000):
        b = bench_dir / "branches" / f"b{i:04d}"
        (b / "sub").mkdir(parents=True)
        (b / "sub" / f"only-{i}").write_bytes(b"")
        branches.append(b)
    return branches


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_lookup_depth(benchmark, many_branches, bench_dir, n):
    benchmark.group = "storagekit lookup through N branches"
    benchmark.extra_info["depth"] = n
    lowers = many_branches[:n]
    bottom = f"sub/only-{n - 1}"
    u = Union("storagekit", lowers, bench_dir / f"depth{n}")
    u.mount()
    try:
        # every round looks up a name the kernel has not cached yet; the directory's index of
        # its N branches was built by the first lookup in it (timed in the next group)
        names = iter(range(10**9))

        def lookup():
            os.stat(u.mnt / bottom)
            try:
                os.stat(u.mnt / "sub" / f"missing-{next(names)}")  # in none of the N
            except FileNotFoundError:
                pass

        benchmark.pedantic(lookup, rounds=200, iterations=1)
    finally:
        u.unmount()
        u.cleanup()
    assert not union.daemon_pids(u.mnt)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_first_lookup_depth(benchmark, many_branches, bench_dir, n):
    """The first lookup in a directory of N branches, on a fresh mount: it opens the
    directory in every branch that has it and indexes their entries."""
    benchmark.group = "storagekit first lookup in a directory of N branches"
    benchmark.extra_info["depth"] = n
    u = Union("storagekit", many_branches[:n], bench_dir / f"first-depth{n}")
    path = u.mnt / "sub" / f"only-{n - 1}"
    try:
        benchmark.pedantic(lambda: os.stat(path), setup=lambda: [u.mount()] and None,
                           teardown=u.unmount, rounds=5, iterations=1)
    finally:
        if _native.is_mountpoint(str(u.mnt)):
            u.unmount()
        u.cleanup()
    assert not union.daemon_pids(u.mnt)


@pytest.mark.parametrize("who", ["storagekit", "kernel overlay"])
def test_unmount(benchmark, small_lower, bench_dir, who):
    benchmark.group = "unmount (a union that served one read)"
    benchmark.extra_info["baseline"] = who == "kernel overlay"
    u = Union(who, [small_lower], bench_dir / f"unmount-{who.replace(' ', '-')}")

    def setup():
        u.mount()
        (u.mnt / "d00" / "f0").read_bytes()

    benchmark.pedantic(u.unmount, setup=setup, rounds=ROUNDS * 3, iterations=1)
    u.cleanup()
    assert not union.daemon_pids(u.mnt)
