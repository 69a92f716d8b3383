"""Shared data sets and helpers for the benchmarks.

Every benchmark group times storagekit and its baseline (cp, GNU tar, ...) in the same run on
the same data, so the ratio between them holds even on a noisy machine. Data sets are built
once per session under $STORAGEKIT_BENCH_DIR (default /var/tmp/storagekit-bench) and the page
cache is warmed before timing; sizes can be shrunk for a quick run with STORAGEKIT_BENCH_SCALE
(e.g. 0.1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopfs import loop_filesystem  # noqa: E402

SCALE = float(os.environ.get("STORAGEKIT_BENCH_SCALE", "1"))
SMALL_FILES = max(100, int(20_000 * SCALE))
BIG_FILE_BYTES = max(1 << 20, int((1 << 30) * SCALE))


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    base = Path(os.environ.get("STORAGEKIT_BENCH_DIR", "/var/tmp/storagekit-bench"))
    base.mkdir(parents=True, exist_ok=True)
    work = base / f"run-{os.getpid()}"
    work.mkdir()
    yield work
    shutil.rmtree(work, ignore_errors=True)


def warm(path: Path) -> None:
    """Read everything under path once so every contender starts with a warm page cache."""
    subprocess.run(f"find '{path}' -type f -exec cat {{}} + > /dev/null", shell=True, check=True)


@pytest.fixture(scope="session")
def small_tree(bench_dir: Path) -> Path:
    """SMALL_FILES files of 1-8 KiB in 100 directories (a typical image layer's shape)."""
    root = bench_dir / "small-tree"
    rnd = os.urandom(8192)
    for i in range(SMALL_FILES):
        d = root / f"dir{i % 100:03d}"
        if i < 100:
            d.mkdir(parents=True)
        size = 1024 * (1 + i % 8)
        (d / f"file{i:05d}").write_bytes(rnd[:size])
    warm(root)
    return root


def write_incompressible(path: Path, nbytes: int) -> None:
    """A file of nbytes (whole MiB) of random data."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(nbytes >> 20):
            f.write(chunk)


@pytest.fixture(scope="session")
def big_tree(bench_dir: Path) -> Path:
    """One file of BIG_FILE_BYTES of incompressible data."""
    root = bench_dir / "big-tree"
    root.mkdir()
    write_incompressible(root / "big.bin", BIG_FILE_BYTES)
    warm(root)
    return root


def gnu_tar(tree: Path, out: Path) -> Path:
    subprocess.run(["tar", "-cf", str(out), "-C", str(tree), "."], check=True)
    return out


def clear(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.fixture(scope="session")
def xfs_bench() -> Path:
    """An xfs (reflink=1) loop filesystem big enough for the data sets."""
    size_mib = max(1024, 3 * (BIG_FILE_BYTES >> 20) + 1024)
    with loop_filesystem("xfs", size_mib=size_mib) as mnt:
        yield mnt
