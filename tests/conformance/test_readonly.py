"""Read-only layers, on every driver: a layer made by create() (an image layer, a view) and a
committed one mount read-only for real — a write through the mount fails with EROFS, and the
mounts as data say "ro" and really mount read-only — while a layer made by create_rw() is
writable until commit() makes it read-only, in place."""

from __future__ import annotations

import errno
import io
import os
import subprocess

import pytest
from test_contract import BASE, make_base, mounted
from treeutil import describe, make_tar

from storagekit.driver import Driver, Mount
from storagekit.errors import LayerInUse


def write_fails_read_only(path: str) -> None:
    with pytest.raises(OSError) as e:
        with open(os.path.join(path, "new-file"), "w") as f:
            f.write("x")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.unlink(os.path.join(path, "etc/hostname"))
    assert e.value.errno == errno.EROFS


def mount_as_data(mounts: list[Mount], target: str) -> None:
    """Mount what mounts() describes the way containerd's mount code does: bind mounts with
    mount(2) (and a read-only remount for "ro"), everything else through mount(8), which runs
    the helpers of FUSE types."""
    (m,) = mounts
    if m.type == "bind":
        subprocess.run(["mount", "--bind", m.source, target], check=True)
        if "ro" in m.options:
            subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
        return
    subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options), m.source, target],
                   check=True, capture_output=True)


def umount(target: str) -> None:
    subprocess.run(["umount", target], check=True)


@pytest.mark.parametrize("with_parent", [False, True], ids=["base", "child"])
def test_an_image_layer_mounts_read_only(driver: Driver, with_parent, tmp_path):
    make_base(driver)
    layer = "base"
    if with_parent:
        driver.create("top", "base")
        driver.apply_diff("top", "base", io.BytesIO(make_tar([{"name": "top", "data": b"t"}])))
        layer = "top"
    assert driver.is_readonly(layer)
    with mounted(driver, layer) as path:
        write_fails_read_only(path)
        assert os.path.exists(os.path.join(path, "etc/hostname"))
    mounts = driver.mounts(layer)
    assert "ro" in mounts[0].options
    target = tmp_path / "as-data"
    target.mkdir()
    mount_as_data(mounts, str(target))
    try:
        assert (target / "etc/hostname").read_text() == "base\n"
        write_fails_read_only(str(target))
    finally:
        umount(str(target))


def test_a_writable_layer_is_committed_in_place(driver: Driver, tmp_path):
    make_base(driver)
    driver.create_rw("c", "base")
    assert not driver.is_readonly("c")
    assert "ro" not in driver.mounts("c")[0].options
    with mounted(driver, "c") as path:
        with open(os.path.join(path, "written"), "w") as f:
            f.write("by the container")
        with pytest.raises(LayerInUse):
            driver.commit("c")  # not while it is mounted
        before = describe(path)
    driver.commit("c")
    assert driver.is_readonly("c")
    with mounted(driver, "c") as path:
        assert describe(path) == before  # nothing copied, nothing lost
        write_fails_read_only(path)
    assert "ro" in driver.mounts("c")[0].options
    # a committed layer is a parent like any other
    driver.create_rw("d", "c")
    with mounted(driver, "d") as path:
        with open(os.path.join(path, "written")) as f:
            assert f.read() == "by the container"


def test_applying_to_a_read_only_layer_still_works(driver: Driver):
    """apply_diff is how a read-only layer gets its content, natively or through a mount."""
    driver.create("base")
    driver.apply_diff("base", None, io.BytesIO(make_tar(BASE)))
    driver.create("top", "base")
    # against a parent that is not the direct one: the naive path, through a writable mount
    driver.apply_diff("top", None, io.BytesIO(make_tar([{"name": "naive", "data": b"n"}])))
    with mounted(driver, "top") as path:
        with open(os.path.join(path, "naive")) as f:
            assert f.read() == "n"
        write_fails_read_only(path)
