"""The btrfs driver against the two other btrfs implementations that run here — containerd's
btrfs snapshotter and Docker's btrfs graphdriver — on one loop btrfs, same run, interleaved
(before each timed round of one contender, every other contender does the same once, in
pytest-benchmark's setup, so the machine's ups and downs fall on all of them alike).

Groups:
  btrfs layer create      a writable child of a parent holding PARENT_MIB of data in many
                          files: storagekit's driver (in process) and its CLI (`layer create
                          --rw --parent`), `ctr snapshots --snapshotter btrfs prepare`, and
                          `btrfs subvolume snapshot` (btrfs-progs, the baseline): all O(1)
  btrfs container boot    `run --rm busybox /bin/true`: storagekit's CLI on its btrfs driver,
                          `ctr run --rm --snapshotter btrfs` (the baseline) and `docker run
                          --rm` on dockerd --storage-driver btrfs

The stores are on the same filesystem (a loop btrfs over a sparse file in /tmp): storagekit
uses it directly, containerd and dockerd keep their roots on it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import SCALE, loop_filesystem

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "docker"))

from containerd_util import running_containerd  # noqa: E402
from dockerutil import Dockerd, force_cleanup, require_docker  # noqa: E402

from storagekit.image import Images  # noqa: E402
from storagekit.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "15"))
PARENT_MIB = max(8, int(200 * SCALE))
REF = "docker.io/library/busybox:latest"


def _command() -> str:
    path = Path(sysconfig.get_path("scripts")) / "storagekit"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install storagekit (pip install -e .)")
    return str(path)


class Bench:
    """Everything on one loop btrfs: a storagekit store, a containerd, a dockerd."""

    def __init__(self, fs: Path, busybox: Path, oci: Path, stack) -> None:
        self.fs = fs
        self.store = Store(fs / "sk", "btrfs")
        Images(self.store).import_image(busybox, name="busybox")
        self.ctrd = stack.enter_context(running_containerd(under=fs))
        self.ctrd.ctr("images", "import", "--snapshotter", "btrfs", str(oci))
        self.dockerd: Dockerd | None = None
        self.names = (f"n{i}" for i in itertools.count())

    def start_dockerd(self, docker_image: Path) -> None:
        require_docker()
        self.dockerd = Dockerd(self.fs / "dk", "btrfs")  # Docker's own btrfs graphdriver
        self.dockerd.start()
        self.dockerd.docker("load", "-q", "-i", str(docker_image))

    def close(self) -> None:
        try:
            if self.dockerd is not None and self.dockerd.proc is not None:
                self.dockerd.stop()
        finally:
            force_cleanup(self.fs / "dk")
            self.store.driver.cleanup()
            self.store.close()


@pytest.fixture(scope="module")
def images(bench_dir: Path) -> tuple[Path, Path, Path]:
    """busybox: the rootfs tar, an OCI archive (ctr) and a docker-archive (docker load)."""
    rootfs = bench_dir / "busybox.tar"
    subprocess.run([str(REPO / "scripts/build-busybox-image.sh"), str(rootfs)], check=True)
    with Store(bench_dir / "btrfs-image-store", "vfs") as store:
        Images(store).import_image(rootfs, name="busybox:latest")
        oci = bench_dir / "busybox-oci.tar"
        Images(store).export("busybox:latest", oci)
    return rootfs, oci, oci  # the export carries manifest.json too: docker load takes it


@pytest.fixture(scope="module")
def bench(images):
    import contextlib

    with contextlib.ExitStack() as stack:
        fs = stack.enter_context(loop_filesystem("btrfs", size_mib=4096))
        b = Bench(fs, images[0], images[1], stack)
        stack.callback(b.close)
        yield b


# ------------------------------------------------------------------ layer create


@pytest.fixture(scope="module")
def parents(bench):
    """The same parent content in each contender: PARENT_MIB in 1 MiB files."""
    d = bench.store.driver
    bench.store.create("parent", None, kind="active")
    path = bench.store.get("parent")
    blob = os.urandom(1 << 20)
    for i in range(PARENT_MIB):
        with open(f"{path}/f{i:04d}", "wb") as f:
            f.write(blob)
    bench.store.put("parent")
    bench.store.commit("parent")
    # btrfs-progs: a plain subvolume with the same files
    plain = bench.fs / "plain"
    plain.mkdir()
    subprocess.run(["btrfs", "subvolume", "snapshot", "-r", d.path("parent"),
                    str(plain / "parent")], check=True, capture_output=True)
    # containerd: a committed snapshot with the same files
    ctr = bench.ctrd.ctr
    active = bench.ctrd.dir / "root" / "io.containerd.snapshotter.v1.btrfs" / "active"
    before = set(os.listdir(active)) if active.exists() else set()
    ctr("snapshots", "--snapshotter", "btrfs", "prepare", "p-active")
    (new,) = set(os.listdir(active)) - before
    subprocess.run(["cp", "-a", "--reflink=never", f"{d.path('parent')}/.", str(active / new)],
                   check=True)
    ctr("snapshots", "--snapshotter", "btrfs", "commit", "p-parent", "p-active")
    os.sync()
    return plain


CREATORS = ["storagekit driver", "storagekit CLI", "ctr snapshots prepare",
            "btrfs subvolume snapshot"]


def _creator(bench, parents, name: str):
    keys = bench.names
    made: list[tuple[str, str]] = []

    def create() -> None:
        key = next(keys)
        if name == "storagekit driver":
            bench.store.create(key, "parent", kind="active")
        elif name == "storagekit CLI":
            subprocess.run([_command(), "--root", str(bench.store.root), "layer", "create",
                            key, "--rw", "--parent", "parent"], check=True,
                           capture_output=True)
        elif name == "ctr snapshots prepare":
            bench.ctrd.ctr("snapshots", "--snapshotter", "btrfs", "prepare", key, "p-parent")
        else:
            subprocess.run(["btrfs", "subvolume", "snapshot", str(parents / "parent"),
                            str(parents / key)], check=True, capture_output=True)
        made.append((name, key))

    return create, made


def _undo(bench, parents, made) -> None:
    for name, key in made:
        if name.startswith("storagekit"):
            bench.store.remove(key)
        elif name.startswith("ctr"):
            bench.ctrd.ctr("snapshots", "--snapshotter", "btrfs", "rm", key)
        else:
            subprocess.run(["btrfs", "subvolume", "delete", str(parents / key)], check=True,
                           capture_output=True)
    made.clear()


@pytest.mark.parametrize("name", CREATORS)
def test_layer_create(benchmark, bench, parents, name):
    benchmark.group = "btrfs layer create"
    benchmark.extra_info["baseline"] = name == "btrfs subvolume snapshot"
    benchmark.extra_info["parent_MiB"] = PARENT_MIB
    mine, made = _creator(bench, parents, name)
    others = [_creator(bench, parents, n) for n in CREATORS if n != name]

    def interleave() -> None:
        for create, _ in others:
            create()

    try:
        benchmark.pedantic(mine, setup=interleave, rounds=ROUNDS, iterations=1)
    finally:
        _undo(bench, parents, made)
        for _, other_made in others:
            _undo(bench, parents, other_made)


# ------------------------------------------------------------------ container boot


BOOTERS = ["storagekit CLI", "ctr run", "docker run"]


def _booter(bench, name: str):
    if name == "storagekit CLI":
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cmd = [_command(), "--root", str(bench.store.root), "run", "--rm", "busybox",
               "/bin/true"]
        return lambda: subprocess.run(cmd, check=True, env=env, capture_output=True)
    if name == "ctr run":
        return lambda: bench.ctrd.ctr("run", "--rm", "--snapshotter", "btrfs", REF,
                                      next(bench.names), "/bin/true")
    assert bench.dockerd is not None
    return lambda: bench.dockerd.docker("run", "--rm", "busybox", "true")


@pytest.fixture(scope="module")
def booting(bench, images):
    bench.start_dockerd(images[2])
    for name in BOOTERS:
        _booter(bench, name)()  # warm
    return bench


@pytest.mark.parametrize("name", BOOTERS)
def test_container_boot(benchmark, booting, name):
    benchmark.group = "btrfs container boot"
    benchmark.extra_info["baseline"] = name == "ctr run"
    mine = _booter(booting, name)
    others = [_booter(booting, n) for n in BOOTERS if n != name]

    def interleave() -> None:
        for other in others:
            other()

    benchmark.pedantic(mine, setup=interleave, rounds=ROUNDS, iterations=1)


# ------------------------------------------------------------------ changes


CHANGE_FILES = max(1000, int(20_000 * SCALE))


@pytest.fixture(scope="module")
def edited(bench):
    """A committed parent of CHANGE_FILES small files in 100 directories, and a child that
    changed ten of them."""
    d = bench.store.driver
    d.create_rw("cparent")
    path = d.get("cparent")
    data = os.urandom(4096)
    for i in range(CHANGE_FILES):
        sub = f"{path}/d{i % 100:02d}"
        if i < 100:
            os.mkdir(sub)
        with open(f"{sub}/f{i:05d}", "wb") as f:
            f.write(data[: 512 + i % 3584])
    d.put("cparent")
    d.commit("cparent")
    d.create_rw("cchild", "cparent")
    path = d.get("cchild")
    for i in range(0, CHANGE_FILES, CHANGE_FILES // 10):
        with open(f"{path}/d{i % 100:02d}/f{i:05d}", "ab") as f:
            f.write(b"changed")
    d.put("cchild")
    yield d
    d.remove("cchild")
    d.remove("cparent")


@pytest.mark.parametrize("how", ["generations", "tree walk"])
def test_changes(benchmark, edited, how):
    """changes() against the direct parent: from the snapshot's generation (the driver's)
    and by comparing the two trees (storagekit's naive diff, the baseline)."""
    from storagekit.driver import Driver

    benchmark.group = f"btrfs changes (10 of {CHANGE_FILES} files changed)"
    benchmark.extra_info["baseline"] = how == "tree walk"
    benchmark.extra_info["files"] = CHANGE_FILES
    if how == "generations":
        fn = lambda: edited.changes("cchild", "cparent")  # noqa: E731
    else:
        fn = lambda: Driver.changes(edited, "cchild", "cparent")  # noqa: E731
    assert [c.path for c in fn()] == [c.path for c in Driver.changes(edited, "cchild",
                                                                        "cparent")]
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
