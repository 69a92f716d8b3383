"""Tree copy, layer apply and layer export against cp and GNU tar, in the same run.

Groups (each holds storagekit and its baseline):
  copy <tree>            native copy_tree        vs  cp -a
  copy <tree> on xfs     native copy_tree        vs  cp -a --reflink=always   (xfs reflink=1)
  apply <tree>           native apply_tar        vs  tar -x
  export <tree>          native export_tar       vs  tar -c
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import clear, gnu_tar

from storagekit import _native

ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "3"))


def run(benchmark, fn, setup=None, baseline=False):
    """Time fn; before each round (untimed) setup runs and dirty data is written back, so no
    contender pays for the previous one's writeback."""

    def prepare():
        if setup is not None:
            setup()
        os.sync()

    benchmark.extra_info["baseline"] = baseline
    benchmark.pedantic(fn, setup=prepare, rounds=ROUNDS, iterations=1, warmup_rounds=0)


@pytest.fixture(params=["small", "big"])
def tree(request, small_tree, big_tree) -> Path:
    return small_tree if request.param == "small" else big_tree


def _label(tree: Path) -> str:
    return "20k small files" if tree.name == "small-tree" else "1 GiB file"


@pytest.mark.parametrize("who", ["storagekit", "cp -a"])
def test_copy(benchmark, tree, bench_dir, who):
    benchmark.group = f"copy {_label(tree)}"
    dst = bench_dir / "copy-dst"

    def setup():
        clear(dst)

    if who == "storagekit":
        run(benchmark, lambda: _native.copy_tree(str(tree), str(dst)), setup)
    else:
        run(benchmark, lambda: subprocess.run(["cp", "-a", str(tree), str(dst)], check=True),
            setup, baseline=True)
    clear(dst)


@pytest.mark.parametrize("who", ["storagekit", "cp -a --reflink=always"])
def test_copy_reflink_xfs(benchmark, tree, xfs_bench, who):
    benchmark.group = f"copy {_label(tree)} on xfs (reflink)"
    src = xfs_bench / tree.name
    if not src.exists():
        subprocess.run(["cp", "-a", str(tree), str(src)], check=True)
    dst = xfs_bench / "copy-dst"

    def setup():
        clear(dst)

    if who == "storagekit":
        run(benchmark, lambda: _native.copy_tree(str(src), str(dst)), setup)
    else:
        run(benchmark, lambda: subprocess.run(
            ["cp", "-a", "--reflink=always", str(src), str(dst)], check=True), setup,
            baseline=True)
    clear(dst)


@pytest.mark.parametrize("who", ["storagekit", "tar -x", "tar -x + sha256sum"])
def test_apply(benchmark, tree, bench_dir, who):
    """storagekit computes the layer's diff ID (SHA-256 of the tar) while applying; GNU tar
    does not, so "tar -x + sha256sum" shows what the same work costs with the usual tools."""
    benchmark.group = f"apply {_label(tree)}"
    tar = bench_dir / f"{tree.name}.tar"
    if not tar.exists():
        gnu_tar(tree, tar)
    subprocess.run(["cat", str(tar)], check=True, stdout=subprocess.DEVNULL)  # warm
    dst = bench_dir / "apply-dst"

    def setup():
        clear(dst)
        dst.mkdir()

    def ours():
        fd = os.open(tar, os.O_RDONLY)
        try:
            _native.apply_tar(fd, str(dst))
        finally:
            os.close(fd)

    if who == "storagekit":
        run(benchmark, ours, setup)
    elif who == "tar -x":
        run(benchmark, lambda: subprocess.run(["tar", "-xf", str(tar), "-C", str(dst)],
                                              check=True), setup, baseline=True)
    else:
        script = f"tee >(sha256sum > /dev/null) < '{tar}' | tar -xf - -C '{dst}'"
        run(benchmark, lambda: subprocess.run(["bash", "-c", script], check=True), setup)
    clear(dst)


@pytest.mark.parametrize("who", ["storagekit", "tar -c", "tar -c + sha256sum"])
def test_export(benchmark, tree, bench_dir, who):
    """As for apply: storagekit's export also computes the diff ID."""
    benchmark.group = f"export {_label(tree)}"
    out = bench_dir / "export.tar"

    def setup():
        out.unlink(missing_ok=True)

    def ours():
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _native.export_tar(str(tree), fd)
        finally:
            os.close(fd)

    if who == "storagekit":
        run(benchmark, ours, setup)
    elif who == "tar -c":
        run(benchmark, lambda: gnu_tar(tree, out), setup, baseline=True)
    else:
        script = f"tar -cf - -C '{tree}' . | tee '{out}' | sha256sum > /dev/null"
        run(benchmark, lambda: subprocess.run(["bash", "-c", script], check=True), setup)
    out.unlink(missing_ok=True)
