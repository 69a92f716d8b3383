"""dockerd 20.10 on storagekit's drivers against dockerd on its own overlay2, same run:
`docker run --rm busybox true` and `docker load` of the busybox image.

Contenders: dockerd's overlay2 (the baseline), storagekit-overlay, and storagekit-aufs and
storagekit-devicemapper — the two drivers Docker no longer has. All four dockerds run side by
side; the rounds are interleaved: before each timed round of one contender, every other
contender does the same operation once (untimed, in pytest-benchmark's setup), so that the
machine's ups and downs fall on all of them alike.

Group "docker run --rm": baseline/entry > 1 means faster than dockerd's overlay2.
Group "docker load": the same for loading the image (each round loads it into a dockerd that
does not have it; removing it again is not timed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "docker"))

from dockerutil import DRIVER_OPTIONS, Dockerd, Plugin, force_cleanup, require_docker  # noqa: E402

from storagekit.image import Images  # noqa: E402
from storagekit.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("STORAGEKIT_BENCH_ROUNDS", "15"))
BASELINE = "overlay2"
CONTENDERS = [BASELINE, "storagekit-overlay", "storagekit-aufs", "storagekit-devicemapper"]
IMAGE = "busybox:latest"


class Contender:
    def __init__(self, name: str, home: Path) -> None:
        self.name, self.home = name, home
        self.plugin: Plugin | None = None
        graphdriver = name
        if name.startswith("storagekit-"):
            driver = name.removeprefix("storagekit-")
            self.plugin = Plugin(home / "store", driver, home / "plugin.log")
            graphdriver = self.plugin.name
        self.dockerd = Dockerd(home / "d", graphdriver,
                               DRIVER_OPTIONS.get(name.removeprefix("storagekit-")))

    def start(self) -> None:
        if self.plugin is not None:
            self.plugin.start()
        self.dockerd.start()

    def stop(self) -> None:
        try:
            if self.dockerd.proc is not None:
                self.dockerd.stop()
            if self.plugin is not None and self.plugin.proc is not None:
                self.plugin.stop()
        finally:
            force_cleanup(self.home)  # nothing of a benchmark stays on the machine

    def docker(self, *args: str) -> None:
        self.dockerd.docker(*args)

    def run(self) -> None:
        self.docker("run", "--rm", IMAGE, "true")

    def load(self, image: Path) -> None:
        self.docker("load", "-q", "-i", str(image))

    def unload(self) -> None:
        if self.dockerd.docker("image", "inspect", IMAGE, check=False).returncode == 0:
            self.docker("rmi", IMAGE)


@pytest.fixture(scope="module")
def busybox_image(bench_dir: Path) -> Path:
    """The busybox image as `storagekit image export` writes it (docker load takes it)."""
    rootfs = bench_dir / "busybox.tar"
    subprocess.run([str(REPO / "scripts/build-busybox-image.sh"), str(rootfs)], check=True)
    with Store(bench_dir / "docker-image-store", "vfs") as store:
        Images(store).import_image(rootfs, name=IMAGE)
        out = bench_dir / "busybox-docker.tar"
        Images(store).export(IMAGE, out)
    return out


@pytest.fixture(scope="module")
def dockerds(bench_dir: Path, busybox_image: Path):
    require_docker()
    # Short directory names: containerd's sockets live under dockerd's exec root, and a unix
    # socket's path has at most 107 bytes.
    contenders = {name: Contender(name, bench_dir / f"dk{i}") for i, name in enumerate(CONTENDERS)}
    try:
        for c in contenders.values():
            c.start()
            c.load(busybox_image)
            c.run()  # warm: the image's layers mounted once, the runtime's caches filled
        yield contenders
    finally:
        for c in contenders.values():
            c.stop()


def _others(dockerds, name: str) -> list[Contender]:
    return [c for n, c in dockerds.items() if n != name]


@pytest.mark.parametrize("name", CONTENDERS)
def test_docker_run_rm(benchmark, dockerds, name):
    benchmark.group = "docker run --rm"
    benchmark.extra_info["baseline"] = name == BASELINE
    me = dockerds[name]

    def interleave() -> None:
        for other in _others(dockerds, name):
            other.run()

    benchmark.pedantic(me.run, setup=interleave, rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("name", CONTENDERS)
def test_docker_load(benchmark, dockerds, busybox_image, name):
    benchmark.group = "docker load"
    benchmark.extra_info["baseline"] = name == BASELINE
    me = dockerds[name]

    def interleave() -> None:
        for other in _others(dockerds, name):
            other.unload()
            other.load(busybox_image)
        me.unload()

    benchmark.pedantic(lambda: me.load(busybox_image), setup=interleave, rounds=ROUNDS,
                       iterations=1)
    # Leave every dockerd with the image, as the run benchmarks expect it.
    for c in dockerds.values():
        if c.dockerd.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            c.load(busybox_image)
