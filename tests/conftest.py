"""Fixtures shared by every test: real filesystems on loop devices, and leak checks.

Tests run as root (here and in CI). A test that needs a kernel feature or a tool checks for it
and skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cliutil import command
from crowdutil import crowd_on
from imageutil import three_layers, write_docker_save
from loopfs import loop_filesystem

from storagekit import registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def xfs_dir() -> Iterator[Path]:
    """A directory on a fresh xfs (reflink=1) loop filesystem."""
    with loop_filesystem("xfs") as mnt:
        yield mnt


@pytest.fixture
def btrfs_dir() -> Iterator[Path]:
    """A directory on a fresh btrfs loop filesystem."""
    with loop_filesystem("btrfs") as mnt:
        yield mnt


@pytest.fixture
def ext4_dir() -> Iterator[Path]:
    """A directory on a fresh ext4 loop filesystem (no reflink)."""
    with loop_filesystem("ext4") as mnt:
        yield mnt


def _mount_targets() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _loop_devices() -> dict[str, str]:
    """Attached loop devices: name -> backing file."""
    out = {}
    for d in Path("/sys/block").glob("loop*"):
        try:
            out[d.name] = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
    return out


def _another_runs(path: str, ours: Path) -> bool:
    """Is path inside the temporary directory of another pytest run (a test session or a
    benchmark running alongside this one, whose mounts come and go meanwhile)?"""
    runs = str(ours.parent)  # /tmp/pytest-of-<user>
    mine = str(ours)
    return path.startswith(runs + "/") and not (path == mine or path.startswith(mine + "/"))


@pytest.fixture(scope="session", autouse=True)
def no_leaks(tmp_path_factory):
    """Fail the run if the tests leave mounts or loop devices behind (those of other pytest
    runs on the machine aside)."""
    ours = tmp_path_factory.getbasetemp()
    mounts, loops = _mount_targets(), set(_loop_devices())

    def leaks() -> tuple[set[str], set[str]]:
        leaked_mounts = {m for m in _mount_targets() - mounts if not _another_runs(m, ours)}
        leaked_loops = {name for name, backing in _loop_devices().items()
                        if name not in loops and not _another_runs(backing, ours)}
        return leaked_mounts, leaked_loops

    yield
    # A loop device detached while its filesystem is still busy (a FUSE daemon that is
    # exiting, a lazy unmount) goes away by itself moments later: give it that time.
    deadline = time.monotonic() + 10
    while True:
        leaked_mounts, leaked_loops = leaks()
        if not (leaked_mounts or leaked_loops) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked_mounts, f"tests left mounts behind: {sorted(leaked_mounts)}"
    assert not leaked_loops, f"tests left loop devices attached: {sorted(leaked_loops)}"


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    """The busybox image (a root filesystem tar) built by scripts/build-busybox-image.sh."""
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is needed to build the busybox image")
    out = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    subprocess.run([str(REPO / "scripts/build-busybox-image.sh"), str(out)], check=True)
    assert os.path.getsize(out) > 0
    return out


@pytest.fixture(scope="session")
def busybox_image(busybox_tar: Path, tmp_path_factory) -> Path:
    """The busybox image as `storagekit image export` writes it (an OCI layout with a docker
    manifest.json, as a tar), which docker load and ctr images import take."""
    work = tmp_path_factory.mktemp("busybox-image")
    store = ["--root", str(work / "store"), "--driver", "vfs"]
    subprocess.run([command(), *store, "image", "import", str(busybox_tar), "--name",
                    "busybox:latest"], check=True, capture_output=True)
    out = work / "busybox-image.tar"
    subprocess.run([command(), *store, "image", "export", "busybox:latest", "-o", str(out)],
                   check=True, capture_output=True)
    return out


# The layered image's runtime config (whoever boots it reads these).
LAYERED_RUNTIME = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}


@pytest.fixture(scope="session")
def layered_image(busybox_tar: Path, tmp_path_factory) -> tuple[Path, list[bytes]]:
    """A docker save archive: busybox, then three layers with a whiteout, an opaque directory
    and a replaced file (imageutil.three_layers), written by Python's tarfile rather than by
    storagekit. Returns the archive and its layer tars."""
    layers = [busybox_tar.read_bytes(), *three_layers()]
    path = tmp_path_factory.mktemp("layered-image") / "layered.tar"
    write_docker_save(path, layers, tag="layered:1", runtime=LAYERED_RUNTIME)
    return path, layers


@pytest.fixture(params=sorted(registry.available()))
def crowd(request, tmp_path):
    """A store on every driver, driven by real processes through the installed command
    (tests/crowdutil.py): the concurrency and kill -9 tests."""
    yield from crowd_on(request.param, tmp_path)
