"""Thin pools (storagekit.engines.thin): snapshots, I/O through the loop device, metadata
density and activation, each beside its baseline from the same run.

Groups:
  thin snapshot (create_snap + commit)   origin with 1,000 mapped blocks (baseline) vs
                                         1,000,000 (built by thin_restore over a sparse data
                                         file): dm-thin's snapshots cost the same at any size
  thin seq write 1 MiB, seq read 1 MiB,  a thin device through its loop device vs a plain loop
  rand write 4 KiB, rand read 4 KiB      device over a sparse file in the same directory
                                         (baseline); both end in the host's page cache (the
                                         pool's data file and the plain file are buffered)
  thin metadata per mapped block         the engine mapping blocks one write at a time vs
                                         thin_restore building the same mappings (baseline);
                                         extra_info["metadata_bytes_per_block"] is the figure
  thin activation                        activate + deactivate with the daemon running, and
                                         cold (the daemon starts and exits), vs losetup
                                         attach + detach of a plain file (baseline)

I/O uses fio (O_DIRECT, libaio) when installed, else an O_DIRECT loop in Python at queue depth
1; extra_info["tool"] says which, extra_info["MiB/s"] the throughput fio measured.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SCALE

from storagekit._native import ThinPool
from storagekit.engines import thin
from storagekit.engines.thin.layout import PoolDir
from storagekit.engines.thin.stale import clean_stale

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "3"))
MIB = 1 << 20
BS = 64 << 10
AREA = max(64 * MIB, int(1024 * MIB * SCALE)) // MIB * MIB  # bytes of device the I/O covers
RAND_BYTES = max(16 * MIB, int(128 * MIB * SCALE)) // MIB * MIB
FIO = shutil.which("fio")
MAPPED = max(1000, int(100_000 * SCALE))  # blocks mapped for the metadata density figure


def run(benchmark, fn, setup=None, baseline=False, rounds=ROUNDS):
    def prepare():
        if setup is not None:
            setup()
        os.sync()

    benchmark.extra_info["baseline"] = baseline
    return benchmark.pedantic(fn, setup=prepare, rounds=rounds, iterations=1, warmup_rounds=0)


def stop_pool(d: Path) -> None:
    if (d / "pool.json").exists():
        try:
            thin.stop(d)
        finally:
            clean_stale(PoolDir.at(d))


# ------------------------------------------------------------------------------ snapshots


def restored_pool(d: Path, mapped: int) -> Path:
    """A pool whose device 1 maps `mapped` blocks, written by thin_restore; the data file is
    sparse (never written: only the metadata matters here)."""
    d.mkdir(parents=True)
    xml = d / "pool.xml"
    xml.write_text(
        f'<superblock uuid="" time="0" transaction="0" version="2" data_block_size="128" '
        f'nr_data_blocks="{mapped + 1024}">\n'
        f'  <device dev_id="1" mapped_blocks="{mapped}" transaction="0" creation_time="0" '
        f'snap_time="0">\n'
        f'    <range_mapping origin_begin="0" data_begin="0" length="{mapped}" time="0"/>\n'
        f"  </device>\n</superblock>\n")
    meta = d / "metadata"
    with open(meta, "wb") as f:
        f.truncate(max(8 * MIB, mapped * 64))
    subprocess.run(["thin_restore", "-i", str(xml), "-o", str(meta)], check=True,
                   capture_output=True)
    with open(d / "data", "wb") as f:
        f.truncate((mapped + 1024) * BS)
    return d


@pytest.mark.parametrize("mapped", [1_000, 1_000_000])
def test_snapshot(benchmark, bench_dir, mapped):
    if shutil.which("thin_restore") is None:
        pytest.skip("thin_restore is missing: apt-get install thin-provisioning-tools")
    benchmark.group = "thin snapshot (create_snap + commit)"
    d = restored_pool(bench_dir / f"snap-{mapped}", mapped)
    pool = ThinPool.open(d / "metadata", d / "data", commit_interval=0)
    try:
        assert pool.device_status(1)["mapped_blocks"] == mapped

        def setup():
            if 2 in pool.devices():
                pool.message("delete 2")
                pool.commit()

        def snap():
            pool.message("create_snap 2 1")
            pool.commit()

        benchmark.extra_info["mapped_blocks"] = mapped
        run(benchmark, snap, setup, baseline=mapped == 1_000, rounds=max(ROUNDS, 20))
        benchmark.extra_info["metadata_blocks_written"] = pool.status()[
            "last_commit_blocks_written"]
    finally:
        pool.close()
    shutil.rmtree(d)


# ------------------------------------------------------------------------------------ I/O


@pytest.fixture(scope="module")
def thin_device(bench_dir):
    d = bench_dir / "io-pool"
    thin.create_pool(d, AREA * 2)
    thin.message(d, "create_thin 1")
    loop = thin.activate(d, 1, AREA)
    try:
        yield loop
    finally:
        stop_pool(d)


@pytest.fixture(scope="module")
def plain_device(bench_dir):
    image = bench_dir / "plain.img"
    with open(image, "wb") as f:
        f.truncate(AREA)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        image.unlink()


def fio(dev: str, rw: str, bs: str, depth: int, size: int, io_size: int) -> float:
    """Run fio; returns MiB/s."""
    out = subprocess.run(
        [FIO, "--name=bench", f"--filename={dev}", f"--rw={rw}", f"--bs={bs}",
         f"--size={size}", f"--io_size={io_size}", "--direct=1", "--ioengine=libaio",
         f"--iodepth={depth}", "--randrepeat=1", "--norandommap", "--output-format=json"],
        check=True, capture_output=True, text=True).stdout
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["bw_bytes"] / MIB


def python_io(dev: str, rw: str, bs: int, size: int, io_size: int) -> float:
    """O_DIRECT at queue depth 1, for hosts without fio; returns MiB/s."""
    buf = mmap.mmap(-1, bs)
    buf.write(os.urandom(bs))
    rng = random.Random(1)
    fd = os.open(dev, (os.O_RDONLY if "read" in rw else os.O_WRONLY) | os.O_DIRECT)
    start = time.perf_counter()
    try:
        for i in range(io_size // bs):
            off = rng.randrange(size // bs) * bs if rw.startswith("rand") else i * bs
            if "read" in rw:
                os.preadv(fd, [buf], off)
            else:
                os.pwritev(fd, [buf], off)
        if "read" not in rw:
            os.fsync(fd)
    finally:
        os.close(fd)
    return io_size / MIB / (time.perf_counter() - start)


def do_io(dev: str, rw: str, bs: int, depth: int, io_size: int) -> float:
    if FIO:
        return fio(dev, rw, str(bs), depth, AREA, io_size)
    return python_io(dev, rw, bs, AREA, io_size)


def discard(dev: str) -> None:
    """Unmap everything, and flush: the pool commits, so that the space comes back (and is
    punched out of its data file) before the timed part."""
    subprocess.run(["blkdiscard", dev], check=True, capture_output=True)
    fd = os.open(dev, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fill(dev: str) -> None:
    do_io(dev, "write", MIB, 8, AREA)


IO_CASES = {
    # group: (fio rw, block size, queue depth, bytes per round)
    "thin seq write 1 MiB": ("write", MIB, 8, AREA),
    "thin seq read 1 MiB": ("read", MIB, 8, AREA),
    "thin rand write 4 KiB": ("randwrite", 4096, 16, RAND_BYTES),
    "thin rand read 4 KiB": ("randread", 4096, 16, RAND_BYTES),
}


@pytest.mark.parametrize("case", list(IO_CASES))
@pytest.mark.parametrize("who", ["thin device", "plain loop"])
def test_io(benchmark, request, case, who):
    rw, bs, depth, io_size = IO_CASES[case]
    dev = request.getfixturevalue("thin_device" if who == "thin device" else "plain_device")
    benchmark.group = case
    benchmark.extra_info["tool"] = f"fio libaio iodepth={depth}" if FIO else "python O_DIRECT qd1"
    speeds: list[float] = []
    if "read" in rw:
        fill(dev)  # reads of never-written blocks would be free on the thin device
        setup = None
    else:
        # Every round writes into unallocated space, as the first write to a layer does.
        def setup():
            discard(dev)

    run(benchmark, lambda: speeds.append(do_io(dev, rw, bs, depth, io_size)), setup,
        baseline=who == "plain loop")
    benchmark.extra_info["MiB/s"] = round(sorted(speeds)[len(speeds) // 2], 1)


# ------------------------------------------------------------------ metadata per block


def _order(kind: str) -> list[int]:
    blocks = list(range(MAPPED)) if kind == "sequential" else random.Random(7).sample(
        range(MAPPED * 16), MAPPED)
    return blocks


@pytest.mark.parametrize("kind", ["sequential", "random"])
@pytest.mark.parametrize("who", ["engine", "thin_restore"])
def test_metadata_per_block(benchmark, bench_dir, kind, who):
    if shutil.which("thin_restore") is None:
        pytest.skip("thin_restore is missing: apt-get install thin-provisioning-tools")
    benchmark.group = f"thin metadata per mapped block ({kind})"
    d = bench_dir / f"meta-{kind}-{who}"
    d.mkdir()
    meta, data = d / "metadata", d / "data"
    meta_size = max(16 * MIB, MAPPED * 128)

    def engine():
        with ThinPool.create(meta, data, metadata_size=meta_size, data_size=(MAPPED + 64) * BS,
                             skip_block_zeroing=True, commit_interval=0) as pool:
            pool.message("create_thin 1")
            for vb in _order(kind):
                pool.write(1, vb * BS, b"x")
            pool.commit()

    def setup():
        for p in (meta, data):
            p.unlink(missing_ok=True)

    if who == "engine":
        run(benchmark, engine, setup, rounds=1)
    else:
        engine()  # the same mappings, as the engine laid them out
        xml = d / "dump.xml"
        with open(xml, "w") as f:
            subprocess.run(["thin_dump", str(meta)], check=True, stdout=f)
        meta.unlink()

        def restore():
            with open(meta, "wb") as f:
                f.truncate(meta_size)
            subprocess.run(["thin_restore", "-i", str(xml), "-o", str(meta)], check=True,
                           capture_output=True)

        run(benchmark, restore, lambda: meta.unlink(missing_ok=True), baseline=True, rounds=1)
    with ThinPool.open(meta, data, read_only=True) as pool:
        used = pool.status()["used_metadata_blocks"]
        assert pool.device_status(1)["mapped_blocks"] == MAPPED
    benchmark.extra_info["mapped_blocks"] = MAPPED
    benchmark.extra_info["used_metadata_blocks"] = used
    benchmark.extra_info["metadata_bytes_per_block"] = round(used * 4096 / MAPPED, 2)
    shutil.rmtree(d)


# ---------------------------------------------------------------------------- activation


@pytest.mark.parametrize("who", ["thin, daemon running", "thin, cold start", "losetup"])
def test_activation(benchmark, bench_dir, who):
    benchmark.group = "thin activation (attach + detach)"
    if who == "losetup":
        image = bench_dir / "attach.img"
        with open(image, "wb") as f:
            f.truncate(256 * MIB)

        def cycle():
            loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                  capture_output=True, text=True).stdout.strip()
            subprocess.run(["losetup", "-d", loop], check=True)

        run(benchmark, cycle, baseline=True, rounds=max(ROUNDS, 10))
        image.unlink()
        return
    d = bench_dir / f"act-{who.split(',')[1].strip().replace(' ', '-')}"
    thin.create_pool(d, "1G")
    thin.message(d, "create_thin 1")
    thin.message(d, "create_thin 2")
    try:
        if who == "thin, daemon running":
            thin.activate(d, 2, "256M")  # keeps the daemon up

        def cycle():
            thin.activate(d, 1, "256M")
            thin.deactivate(d, 1)

        run(benchmark, cycle, rounds=max(ROUNDS, 10))
    finally:
        stop_pool(d)
    shutil.rmtree(d)
