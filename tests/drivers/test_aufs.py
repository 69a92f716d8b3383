"""The aufs driver beyond the shared contract: Docker's layout, the kernel-aufs mount options,
the union engine's life cycle, and native diffs without aufs bookkeeping."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import time

import pytest
from treeutil import describe, make_tar

from storagekit import _native
from storagekit.drivers.aufs import AufsDriver
from storagekit.drivers.aufs.driver import XINO, kernel_aufs_options
from storagekit.engines import union

pytestmark = pytest.mark.skipif(
    not AufsDriver.probe("/tmp")[0], reason=f"aufs: {AufsDriver.probe('/tmp')[1]}"
)


@pytest.fixture
def driver(tmp_path):
    d = AufsDriver(tmp_path / "aufs")
    yield d
    d.cleanup()


def test_kernel_options_like_docker():
    data, appends = kernel_aufs_options(["/d/rw", "/d/p1", "/d/p2"])
    assert data == f"br:/d/rw=rw:/d/p1=ro+wh:/d/p2=ro+wh,dio,xino={XINO},dirperm1"
    assert appends == []
    many = [f"/var/lib/docker/aufs/diff/{i:064x}" for i in range(127)]
    data, appends = kernel_aufs_options(many, page_size=4096)
    assert len(data) < 4096 and data.startswith(f"br:{many[0]}=rw:")
    fitted = data.split(",")[0].count("=ro+wh")
    assert appends == [f"append:{b}=ro+wh" for b in many[1 + fitted:]]
    assert fitted + len(appends) == 126


def test_layout_and_engine_life_cycle(driver):
    driver.create("base")
    driver.apply_diff("base", None, io.BytesIO(make_tar([
        {"name": "etc", "type": "dir"}, {"name": "etc/a", "data": b"a"}])))
    driver.create("mid", "base")
    driver.create_rw("top", "mid")
    assert (driver.home / "layers/top").read_text() == "mid\nbase\n"
    assert (driver.home / "layers/base").read_text() == ""
    path = driver.get("top")
    pids = union.daemon_pids(path)
    assert len(pids) == 1 and _native.find_mount(path)["fstype"].startswith("fuse")
    os.unlink(os.path.join(path, "etc/a"))  # a whiteout in the rw branch, aufs style
    assert os.path.exists(driver.home / "diff/top/etc/.wh.a")
    assert driver.get("top") == path and union.daemon_pids(path) == pids  # one engine
    driver.put("top")
    driver.put("top")
    assert not _native.is_mountpoint(path)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pids[0]}"):  # the engine stops with the last put
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_dead_engine_is_replaced(driver):
    driver.create("base")
    driver.create_rw("top", "base")
    path = driver.get("top")
    (pid,) = union.daemon_pids(path)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not union.is_dead(path):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    new_path = driver.get("top")  # the dead mount is cleaned and a new engine serves
    assert new_path == path and not union.is_dead(path)
    with open(os.path.join(path, "f"), "w") as f:
        f.write("alive")
    driver.put("top")
    driver.put("top")


def test_native_diff_leaves_out_bookkeeping(driver):
    driver.create("base")
    driver.apply_diff("base", None, io.BytesIO(make_tar([
        {"name": "d", "type": "dir"}, {"name": "d/x", "data": b"x"},
        {"name": "d/y", "data": b"y"}, {"name": "h", "data": b"h"},
        {"name": "h2", "type": "hardlink", "link": "h"}])))
    driver.create_rw("c", "base")
    path = driver.get("c")
    try:
        os.unlink(os.path.join(path, "d/x"))
        subprocess.run(["rm", "-rf", os.path.join(path, "d")], check=True)
        os.mkdir(os.path.join(path, "d"))
        with open(os.path.join(path, "h"), "a") as f:  # copy-up of a hardlinked file
            f.write("!")
        expected = describe(path)
    finally:
        driver.put("c")
    assert any(n.startswith(".wh..wh.") for n in os.listdir(driver.home / "diff/c"))
    data = driver.diff("c", "base").read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [m.name.rstrip("/") for m in tar.getmembers()]
    assert "d/.wh..wh..opq" in names
    assert not any(".wh..wh.aufs" in n or ".wh..wh.plnk" in n for n in names)
    driver.create("copy", "base")
    driver.apply_diff("copy", "base", io.BytesIO(data))
    got = driver.get("copy")
    try:
        assert describe(got) == expected
    finally:
        driver.put("copy")


def test_mounts_as_data_use_the_mount_helper(driver, tmp_path):
    driver.create("base")
    driver.create_rw("top", "base")
    (m,) = driver.mounts("top")
    assert m.type == "fuse.storagekit-union"
    assert m.options[0] == (f"br={driver.home}/diff/top=rw:{driver.home}/diff/base=ro+wh")
    target = tmp_path / "t"
    target.mkdir()
    subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options), m.source, str(target)],
                   check=True)
    try:
        (target / "made").write_text("by mount(8)")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert (driver.home / "diff/top/made").read_text() == "by mount(8)"
