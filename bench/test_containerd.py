"""containerd 1.6 on storagekit's snapshotters against its own overlayfs and native
snapshotters, one containerd, same run: a snapshot's Prepare+Commit, `ctr images import` of the
busybox image and `ctr run --rm busybox /bin/true`.

Contenders: containerd's overlayfs (the baseline), native (a plain copy per snapshot, what
storagekit's vfs is to it), and storagekit-vfs, -overlay, -aufs and -devicemapper, each a
snapshotter server on a store of its own, loaded as a proxy plugin. Every contender works in a
containerd namespace of its own, so that images of one are not the others'. The rounds are
interleaved: before each timed round of one contender, every other contender does the same
operation once (untimed, in pytest-benchmark's setup), so that the machine's ups and downs fall
on all of them alike.

Group "containerd prepare+commit": Prepare of an active snapshot on busybox's and its Commit,
through containerd's snapshots API (what the unpacker does per layer, less the diff).
Group "ctr images import": each round imports into a namespace that does not have the image
(its removal, with containerd's garbage collection, is not timed).
Group "ctr run --rm": boot and tear down a container.
baseline/entry > 1 means faster than overlayfs; storagekit-overlay against overlayfs is the
cost of the gRPC hop (and of the store).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from containerd_util import DRIVER_OPTIONS, Containerd, SnapshotterServer, require_containerd
from hostutil import force_cleanup

from storagekit import registry
from storagekit.image import Images
from storagekit.snapshotter.api import snapshots_pb2, snapshots_pb2_grpc
from storagekit.store import Store

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "15"))
BASELINE = "overlayfs"
OURS = [f"storagekit-{d}" for d in ("vfs", "overlay", "aufs", "devicemapper")
        if d in registry.available()]
CONTENDERS = [BASELINE, "native", *OURS]
IMAGE = "docker.io/library/busybox:latest"


class Contender:
    """One snapshotter of the shared containerd, used in a namespace of its own."""

    def __init__(self, name: str, ctrd: Containerd, index: int) -> None:
        self.name, self.ctrd = name, ctrd
        self.namespace = f"bench{index}"
        self.ids = (f"{self.namespace}-{i}" for i in itertools.count())
        self.parent = ""

    def ctr(self, *args: str) -> subprocess.CompletedProcess:
        return self.ctrd.ctr("-n", self.namespace, *args)

    def load(self, image: Path) -> None:
        self.ctr("images", "import", "--snapshotter", self.name, str(image))

    def unload(self) -> None:
        if IMAGE in self.ctr("images", "ls", "-q").stdout.split():
            self.ctr("images", "rm", "--sync", IMAGE)

    def run(self) -> None:
        self.ctr("run", "--rm", "--snapshotter", self.name, IMAGE, next(self.ids), "/bin/true")

    def find_parent(self) -> None:
        """The busybox image's committed snapshot, the parent of prepare+commit's."""
        rows = self.ctr("snapshots", "--snapshotter", self.name, "ls").stdout.splitlines()[1:]
        committed = [r.split()[0] for r in rows if r.split()[-1] == "Committed"]
        assert len(committed) == 1, rows
        self.parent = committed[0]


class SnapshotsAPI:
    """containerd's own snapshots service (on its socket), as its clients call it."""

    def __init__(self, socket: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.stub = snapshots_pb2_grpc.SnapshotsStub(self.channel)

    # A snapshot nothing refers to is containerd's garbage: rooted, as ctr's own are, so
    # that a collection between Prepare and Commit does not take it.
    ROOT = {"containerd.io/gc.root": "bench"}

    def prepare_commit(self, c: Contender) -> str:
        md = (("containerd-namespace", c.namespace),)
        key = next(c.ids)
        self.stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=c.name, key=f"{key}-active", parent=c.parent, labels=self.ROOT),
            metadata=md)
        self.stub.Commit(snapshots_pb2.CommitSnapshotRequest(
            snapshotter=c.name, name=key, key=f"{key}-active", labels=self.ROOT), metadata=md)
        return key

    def remove(self, c: Contender, key: str) -> None:
        self.stub.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=c.name, key=key),
                         metadata=(("containerd-namespace", c.namespace),))


@pytest.fixture(scope="module")
def busybox_oci(bench_dir: Path) -> Path:
    """The busybox image as `storagekit image export` writes it (ctr images import takes it)."""
    rootfs = bench_dir / "busybox.tar"
    subprocess.run([str(REPO / "scripts/build-busybox-image.sh"), str(rootfs)], check=True)
    with Store(bench_dir / "containerd-image-store", "vfs") as store:
        Images(store).import_image(rootfs, name="busybox:latest")
        out = bench_dir / "busybox-oci.tar"
        Images(store).export("busybox:latest", out)
    return out


@pytest.fixture(scope="module")
def containerd(bench_dir: Path, busybox_oci: Path):
    require_containerd()
    home = bench_dir / "cd"
    servers = {}
    for name in OURS:
        driver = name.removeprefix("storagekit-")
        d = home / driver
        d.mkdir(parents=True)
        servers[name] = SnapshotterServer(d / "store", driver, str(d / "sn.sock"),
                                          d / "snapshotter.log", DRIVER_OPTIONS.get(driver, []))
    ctrd = Containerd(home / "ctd", {name: s.socket for name, s in servers.items()})
    try:
        for s in servers.values():
            s.start()
        ctrd.start()
        contenders = {name: Contender(name, ctrd, i) for i, name in enumerate(CONTENDERS)}
        for c in contenders.values():
            c.load(busybox_oci)
            c.find_parent()
            c.run()  # warm: the image's snapshots mounted once, the runtime's caches filled
        yield contenders, SnapshotsAPI(ctrd.socket)
    finally:
        try:
            if ctrd.proc is not None:
                ctrd.stop()
            for s in servers.values():
                if s.proc is not None:
                    s.stop()
        finally:
            force_cleanup(home)  # nothing of a benchmark stays on the machine


def _others(contenders, name: str) -> list[Contender]:
    return [c for n, c in contenders.items() if n != name]


@pytest.mark.parametrize("name", CONTENDERS)
def test_containerd_prepare_commit(benchmark, containerd, name):
    benchmark.group = "containerd prepare+commit"
    benchmark.extra_info["baseline"] = name == BASELINE
    contenders, api = containerd
    me = contenders[name]
    made: list[tuple[Contender, str]] = []

    def interleave() -> None:
        while made:  # what the previous round made goes, untimed
            api.remove(*made.pop())
        for other in _others(contenders, name):
            api.remove(other, api.prepare_commit(other))

    benchmark.pedantic(lambda: made.append((me, api.prepare_commit(me))), setup=interleave,
                       rounds=ROUNDS * 2, iterations=1)
    while made:
        api.remove(*made.pop())


@pytest.mark.parametrize("name", CONTENDERS)
def test_ctr_images_import(benchmark, containerd, busybox_oci, name):
    benchmark.group = "ctr images import"
    benchmark.extra_info["baseline"] = name == BASELINE
    contenders, _ = containerd
    me = contenders[name]

    def interleave() -> None:
        for other in _others(contenders, name):
            other.unload()
            other.load(busybox_oci)
        me.unload()

    benchmark.pedantic(lambda: me.load(busybox_oci), setup=interleave, rounds=ROUNDS,
                       iterations=1)
    for c in contenders.values():  # every contender keeps the image, for the runs
        if IMAGE not in c.ctr("images", "ls", "-q").stdout.split():
            c.load(busybox_oci)
        c.find_parent()


@pytest.mark.parametrize("name", CONTENDERS)
def test_ctr_run_rm(benchmark, containerd, name):
    benchmark.group = "ctr run --rm"
    benchmark.extra_info["baseline"] = name == BASELINE
    contenders, _ = containerd
    me = contenders[name]

    def interleave() -> None:
        for other in _others(contenders, name):
            other.run()

    benchmark.pedantic(me.run, setup=interleave, rounds=ROUNDS, iterations=1)
