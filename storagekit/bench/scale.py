"""How big a run is (--quick, --full, and a tiny one for the command's own tests), and the
data sets every contender gets: the same files, built once per run under DIR/data."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MiB = 1 << 20


@dataclass(frozen=True)
class Scale:
    name: str
    rounds: int
    small_files: int  # files of 1-8 KiB in the image (and in the metadata tarball)
    big_bytes: int  # the big image file a first write copies up (or CoWs a block of)
    read_bytes: int  # the file N containers read (page cache)
    ns: tuple[int, ...]  # container counts of the disk curve
    readers: int  # containers reading / being upgraded at once
    layer_counts: tuple[int, ...]  # image depths of the deploy curve
    image_sizes: tuple[int, ...]  # image sizes (bytes) of the deploy curve
    io_bytes: int  # the file sequential and random I/O works on
    storm_files: int  # files created then unlinked
    upgrade_wait: float  # seconds a container is given to see a changed base file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES = {
    # the command's own tests: every code path, in seconds
    "tiny": Scale("tiny", 1, 40, 1 * MiB, 1 * MiB, (1, 3), 2, (1, 3), (1 * MiB, 2 * MiB),
                  1 * MiB, 40, 0.3),
    "quick": Scale("quick", 3, 1000, 64 * MiB, 4 * MiB, (1, 10, 25, 50), 10,
                   (1, 10, 50), (1 * MiB, 16 * MiB, 64 * MiB), 16 * MiB, 1000, 1.0),
    "full": Scale("full", 5, 20000, 1024 * MiB, 100 * MiB, (1, 2, 5, 10, 20, 30, 40, 50), 20,
                  (1, 10, 50, 100, 200, 500), (1 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB),
                  1024 * MiB, 20000, 2.0),
}


def write_random(path: Path, nbytes: int) -> None:
    """nbytes of incompressible data (whole MiB, at least one)."""
    chunk = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // MiB)):
            f.write(chunk)


class DataSets:
    """The trees images are made of; each is copied into an image as /<its name>."""

    def __init__(self, root: Path, scale: Scale) -> None:
        self.root, self.scale = root, scale
        root.mkdir(parents=True, exist_ok=True)
        self.bin = root / "bin"  # busybox-static: what a container boot executes
        self.bin.mkdir()
        busybox = shutil.which("busybox")
        if busybox is None:
            from ..errors import StorageError

            raise StorageError("busybox is not installed: install busybox-static")
        shutil.copy2(busybox, self.bin / "busybox")
        self.small = root / "small"
        rnd = os.urandom(8192)
        for i in range(scale.small_files):
            d = self.small / f"dir{i % 100:03d}"
            if i < 100:
                d.mkdir(parents=True)
            (d / f"file{i:05d}").write_bytes(rnd[: 1024 * (1 + i % 8)])
        self.small_list = sorted(str(p.relative_to(root)) for p in self.small.rglob("file*"))
        self.read = root / "read"
        self.read.mkdir()
        write_random(self.read / "read.bin", scale.read_bytes)
        (self.read / "upgrade.txt").write_bytes(b"version 1\n")
        self.big = root / "big"
        self.big.mkdir()
        write_random(self.big / "big.bin", scale.big_bytes)
        self.small_tar = root / "small.tar"
        subprocess.run(["tar", "-cf", str(self.small_tar), "-C", str(root), "small"], check=True)

    def layer_tree(self, k: int) -> Path:
        """The k-th layer of a deep image: one 4 KiB file of its own."""
        d = self.root / "layers" / f"l{k:04d}"
        if not d.exists():
            d.mkdir(parents=True)
            (d / "file").write_bytes(os.urandom(4096))
        return d

    def size_tree(self, nbytes: int) -> Path:
        d = self.root / "sizes" / f"s{nbytes // MiB}m"
        if not d.exists():
            d.mkdir(parents=True)
            write_random(d / "data.bin", nbytes)
        return d
