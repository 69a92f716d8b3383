"""overlay driver: mount time by stack depth, first write to a big lower file, native diff.

Groups:
  overlay mount <api>     get() of a container on N image layers, N = 1, 10, 100, 500, 1000
                          (ratios against N=1 in the same group; 1000 includes flattening,
                          which is cached after the first mount and not timed)
  overlay mount util-linux  `mount -t overlay` with absolute paths (mount(2), one page), the
                          baseline where it can go (N <= ~150)
  first write 1 GiB lower  one byte written into a 1 GiB file of an image layer (copy-up),
                          with the default fsync and with `volatile`, against `cp` of the file
  diff 20k-file upper      native diff of a container's upper dir vs `tar -c` of that dir
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIG_FILE_BYTES, SMALL_FILES, clear
from treeutil import make_tar

from storagekit import _native
from storagekit.drivers.overlay import OverlayDriver

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "5"))
DEPTHS = [1, 10, 100, 500, 1000]


@pytest.fixture(scope="module")
def deep(bench_dir: Path):
    home = bench_dir / "overlay-deep"
    driver = OverlayDriver(home)
    parent = None
    for i in range(1, max(DEPTHS) + 1):
        lid = f"l{i:04d}"
        driver.create(lid, parent)
        driver.apply_diff(lid, parent, io.BytesIO(make_tar([
            {"name": "d", "type": "dir"}, {"name": f"d/f{i}", "data": b"x" * 100}])))
        parent = lid
    for depth in sorted({*DEPTHS, 50}):
        driver.create_rw(f"ctr{depth}", f"l{depth:04d}")
    yield home
    for api in ("new", "legacy"):
        OverlayDriver(home, {"overlay.mount_api": api}).cleanup()


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("api", ["new", "legacy"])
def test_mount(benchmark, deep, depth, api):
    benchmark.group = f"overlay mount ({api} API)"
    benchmark.extra_info["depth"] = depth
    driver = OverlayDriver(deep, {"overlay.mount_api": api})
    ctr = f"ctr{depth}"
    driver.get(ctr)  # builds any flattened layer once, outside the timing
    driver.put(ctr)
    benchmark.pedantic(lambda: driver.get(ctr), teardown=lambda: driver.put(ctr),
                       rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("depth", [1, 10, 50, 100])
def test_mount_util_linux(benchmark, deep, depth, tmp_path):
    benchmark.group = "overlay mount (util-linux mount(2), absolute paths)"
    benchmark.extra_info["depth"] = depth
    driver = OverlayDriver(deep)
    (m,) = driver.mounts(f"ctr{depth}")
    target = tmp_path / "t"
    target.mkdir()
    opts = ",".join(m.options)
    if len(opts) >= os.sysconf("SC_PAGE_SIZE"):
        pytest.skip(f"{depth} layers need {len(opts)} bytes of options, over mount(2)'s page")
    benchmark.pedantic(
        lambda: subprocess.run(["mount", "-t", "overlay", "-o", opts, "overlay", str(target)],
                               check=True),
        teardown=lambda: _native.umount(str(target)), rounds=ROUNDS, iterations=1)


@pytest.fixture(scope="module")
def big_lower(bench_dir: Path, big_tree: Path):
    home = bench_dir / "overlay-big"
    driver = OverlayDriver(home)
    driver.create("img")
    tar = bench_dir / "big.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(big_tree), "."], check=True)
    with open(tar, "rb") as f:
        driver.apply_diff("img", None, f)
    tar.unlink()
    subprocess.run(f"cat '{home}/layers/img/diff/big.bin' > /dev/null", shell=True, check=True)
    yield home
    for vol in ("true", "false"):
        OverlayDriver(home, {"overlay.volatile": vol}).cleanup()


@pytest.mark.parametrize("who", ["overlay (fsync)", "overlay volatile", "cp"])
def test_first_write_big_lower(benchmark, big_lower, bench_dir, who):
    benchmark.group = f"first write to a {BIG_FILE_BYTES >> 20} MiB lower file"
    benchmark.extra_info["baseline"] = who == "cp"
    if who == "cp":
        src = big_lower / "layers/img/diff/big.bin"
        dst = bench_dir / "big.copy"
        benchmark.pedantic(lambda: subprocess.run(["cp", str(src), str(dst)], check=True),
                           setup=lambda: dst.unlink(missing_ok=True), rounds=3, iterations=1)
        dst.unlink(missing_ok=True)
        return
    driver = OverlayDriver(big_lower, {"overlay.volatile": str(who.endswith("volatile"))})
    state = {}

    def setup():
        if "path" in state:
            driver.put("ctr")
            driver.remove("ctr")
        driver.create_rw("ctr", "img")
        state["path"] = driver.get("ctr")

    def first_write():
        fd = os.open(os.path.join(state["path"], "big.bin"), os.O_WRONLY)
        os.pwrite(fd, b"!", 12345)
        os.close(fd)

    benchmark.pedantic(first_write, setup=setup, rounds=3, iterations=1)
    driver.put("ctr")
    driver.remove("ctr")


@pytest.fixture(scope="module")
def busy_upper(bench_dir: Path, small_tree: Path):
    home = bench_dir / "overlay-upper"
    driver = OverlayDriver(home)
    driver.create("img")
    driver.create_rw("ctr", "img")
    path = driver.get("ctr")
    subprocess.run(["cp", "-a", f"{small_tree}/.", path], check=True)
    driver.put("ctr")
    yield driver
    driver.cleanup()


@pytest.mark.parametrize("who", ["storagekit native diff", "tar -c"])
def test_diff_upper(benchmark, busy_upper, bench_dir, who):
    benchmark.group = f"diff of a {SMALL_FILES}-file upper dir"
    out = bench_dir / "diff.tar"
    upper = busy_upper.home / "layers/ctr/diff"

    def ours():
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            busy_upper.export_diff("ctr", "img", fd)
        finally:
            os.close(fd)

    benchmark.extra_info["baseline"] = not who.startswith("storagekit")
    if who.startswith("storagekit"):
        benchmark.pedantic(ours, rounds=ROUNDS, iterations=1)
    else:
        benchmark.pedantic(lambda: subprocess.run(["tar", "-cf", str(out), "-C", str(upper), "."],
                                                  check=True), rounds=ROUNDS, iterations=1)
    clear(out)
