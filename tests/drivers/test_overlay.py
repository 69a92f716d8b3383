"""The overlay driver beyond the shared contract: layout, mount paths, deep stacks, native diff."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest
from treeutil import describe, make_tar

from storagekit import _native
from storagekit.driver import CreateOpts
from storagekit.drivers.overlay import OverlayDriver
from storagekit.errors import StorageError

pytestmark = pytest.mark.skipif(
    not OverlayDriver.probe("/tmp")[0], reason=f"overlay: {OverlayDriver.probe('/tmp')[1]}"
)

APIS = ["new", "legacy"]


def mounted(driver, layer_id):
    class _Ctx:
        def __enter__(self):
            return driver.get(layer_id)

        def __exit__(self, *exc):
            driver.put(layer_id)

    return _Ctx()


@pytest.fixture(params=APIS)
def driver(request, tmp_path):
    d = OverlayDriver(tmp_path / "overlay", {"overlay.mount_api": request.param})
    yield d
    d.cleanup()


def test_layout(driver):
    driver.create("base")
    driver.create("mid", "base")
    driver.create_rw("top", "mid")
    home = driver.home
    links = {lid: (home / "layers" / lid / "link").read_text() for lid in ("base", "mid", "top")}
    assert all(re.fullmatch(r"[A-Z0-9]{26}", v) for v in links.values())
    for lid, link in links.items():
        assert os.readlink(home / "l" / link) == f"../layers/{lid}/diff"
    assert not (home / "layers/base/lower").exists()
    assert (home / "layers/mid/lower").read_text() == f"l/{links['base']}"
    assert (home / "layers/top/lower").read_text() == f"l/{links['mid']}:l/{links['base']}"
    assert (home / "layers/mid/committed").exists() and not (home / "layers/top/committed").exists()
    meta = driver.metadata("top")
    assert set(meta) == {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
    assert meta["LowerDir"] == f"{home}/layers/mid/diff:{home}/layers/base/diff"
    assert meta["UpperDir"] == f"{home}/layers/top/diff"
    with mounted(driver, "top") as path:
        assert path == meta["MergedDir"]
        m = _native.find_mount(path)
        assert m["fstype"] == "overlay"
        # the kernel lists index only when it differs from the module default (off here)
        assert "index=on" not in m["options"].split(",")
        with open(os.path.join(path, "hello"), "w") as f:
            f.write("hi")
        assert (home / "layers/top/diff/hello").read_text() == "hi"
    assert not _native.is_mountpoint(meta["MergedDir"])


def test_committed_layer_mounts_read_only(driver):
    driver.create("base")
    driver.create("mid", "base")
    driver.create("top", "mid")  # mid is committed now
    with mounted(driver, "mid") as path:
        with pytest.raises(OSError) as e:
            open(os.path.join(path, "x"), "w")
        assert e.value.errno == 30  # EROFS


def test_native_diff_converts_whiteouts(driver):
    driver.create("base")
    driver.apply_diff("base", None, io.BytesIO(make_tar([
        {"name": "d", "type": "dir"}, {"name": "d/a", "data": b"a"}, {"name": "d/b", "data": b"b"},
        {"name": "e", "type": "dir"}, {"name": "e/x", "data": b"x"},
    ])))
    driver.create_rw("c", "base")
    with mounted(driver, "c") as path:
        os.unlink(os.path.join(path, "d/a"))
        subprocess.run(["rm", "-rf", os.path.join(path, "e")], check=True)
        os.mkdir(os.path.join(path, "e"))
    upper = driver.home / "layers/c/diff"
    st = os.lstat(upper / "d/a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlay's whiteout
    assert os.getxattr(upper / "e", "trusted.overlay.opaque") == b"y"
    data = driver.diff("c", "base").read()
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = {m.name.rstrip("/"): m for m in tar.getmembers()}
    assert names["d/.wh.a"].isfile() and names["d/.wh.a"].size == 0
    assert "e/.wh..wh..opq" in names
    assert not any("overlay" in k for m in names.values() for k in m.pax_headers)
    # and back: apply writes overlay's own format into the new layer's diff directory
    driver.create("c2", "base")
    driver.apply_diff("c2", "base", io.BytesIO(data))
    upper2 = driver.home / "layers/c2/diff"
    assert stat.S_ISCHR(os.lstat(upper2 / "d/a").st_mode)
    assert os.getxattr(upper2 / "e", "trusted.overlay.opaque") == b"y"
    assert driver.diff_size("c", "base") == 0
    with mounted(driver, "c") as a, mounted(driver, "c2") as b:
        assert describe(a) == describe(b)


def _mounted_volatile(path: str) -> bool:
    """Does /proc/self/mountinfo show the overlay at path as volatile? Newer kernels show
    it as fsync=volatile."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                options = fields[fields.index("-") + 3].split(",")
                return "volatile" in options or "fsync=volatile" in options
    raise AssertionError(f"{path} is not mounted")


def test_volatile_layer_is_mounted_volatile_and_mounts_again(driver):
    driver.create("base")
    driver.create_rw("vol", "base", CreateOpts(volatile=True))
    driver.create_rw("plain", "base")
    mark = driver.home / "layers/vol/work/work/incompat/volatile"
    for round_ in range(2):  # the second mount meets the kernel's mark of the first
        with mounted(driver, "vol") as path:
            assert _mounted_volatile(path)
            with open(os.path.join(path, "file"), "a") as f:
                f.write(str(round_))
        assert mark.is_dir()
    with mounted(driver, "vol") as path:
        assert open(os.path.join(path, "file")).read() == "01"
    with mounted(driver, "plain") as path:
        assert not _mounted_volatile(path)
    assert "volatile" in driver.mounts("vol")[0].options
    assert "volatile" not in driver.mounts("plain")[0].options


def test_volatile_layer_of_an_earlier_boot_is_refused(driver):
    driver.create("base")
    driver.create_rw("vol", "base", CreateOpts(volatile=True))
    with mounted(driver, "vol"):
        pass
    (driver.home / "layers/vol/volatile-boot").write_text("an earlier boot")
    with pytest.raises(StorageError, match="went down"):
        driver.get("vol")
    assert driver.refcount("vol") == 0
    assert not _native.is_mountpoint(str(driver.home / "layers/vol/merged"))
    driver.remove("vol")
    assert not driver.exists("vol")


def test_driver_wide_volatile_mounts_a_layer_again(tmp_path):
    d = OverlayDriver(tmp_path / "overlay", {"overlay.volatile": "true"})
    try:
        d.create("base")
        d.create_rw("c", "base")
        for _ in range(2):
            with mounted(d, "c") as path:
                assert _mounted_volatile(path)
    finally:
        d.cleanup()
    # The option turned off: the layer still mounts (the kernel's mark of the volatile
    # mounts goes), and no longer volatile.
    d = OverlayDriver(tmp_path / "overlay", {"overlay.volatile": "false"})
    try:
        with mounted(d, "c") as path:
            assert not _mounted_volatile(path)
        assert not (d.home / "layers/c/work/work/incompat/volatile").exists()
    finally:
        d.cleanup()


def test_mount_data_is_mountable_by_util_linux(driver, tmp_path):
    driver.create("base")
    driver.create("mid", "base")
    driver.create_rw("top", "mid")
    (m,) = driver.mounts("top")
    assert m.type == "overlay" and m.source == "overlay"
    assert "index=off" in m.options
    target = tmp_path / "t"
    target.mkdir()
    subprocess.run(["mount", "-t", "overlay", "-o", ",".join(m.options), "overlay", str(target)],
                   check=True)
    try:
        (target / "file").write_text("via containerd-style mount")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert (driver.home / "layers/top/diff/file").read_text() == "via containerd-style mount"


def test_a_root_opaque_layer_leaves_its_parents_out_of_the_stack(driver, tmp_path):
    """The kernel ignores the opaque xattr on a layer's root: the driver's stacks must not
    list what such a layer hides, in its mounts, as data and in its metadata."""
    driver.create("base")
    driver.apply_diff("base", None, io.BytesIO(make_tar([{"name": "old", "data": b"old"}])))
    driver.create("wipe", "base")
    driver.apply_diff("wipe", "base", io.BytesIO(make_tar([
        {"name": ".wh..wh..opq", "data": b""}, {"name": "new", "data": b"new"}])))
    driver.create_rw("rw", "wipe")  # its only lower is wipe
    driver.create_rw("own", "base")  # opaque itself, written with an upper directory
    driver.apply_diff("own", "base", io.BytesIO(make_tar([{"name": ".wh..wh..opq", "data": b""}])))
    home = driver.home
    for layer in ("wipe", "rw", "own"):
        with mounted(driver, layer) as path:
            assert "old" not in os.listdir(path), layer
        (m,) = driver.mounts(layer)
        assert f"{home}/layers/base" not in ",".join(os.path.realpath(o.split("=", 1)[-1])
                                                     for o in m.options), layer
        target = tmp_path / f"as-data-{layer}"
        target.mkdir()
        subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options), m.source, str(target)],
                       check=True)
        try:
            assert "old" not in os.listdir(target), layer
        finally:
            subprocess.run(["umount", str(target)], check=True)
    # overlay needs two lower directories without an upper one, one under an upper one: the
    # empty directory stands in for the hidden parents
    lowers = next(o for o in driver.mounts("wipe")[0].options if o.startswith("lowerdir="))
    assert lowers.split("=", 1)[1].split(":")[-1] == f"{home}/empty"
    assert os.listdir(home / "empty") == []
    assert driver.metadata("rw")["LowerDir"] == f"{home}/layers/wipe/diff"
    assert driver.metadata("own")["LowerDir"] == f"{home}/empty"


def test_userxattr_in_a_user_namespace(tmp_path):
    code = textwrap.dedent(f"""
        import io, os, sys
        sys.path.insert(0, {os.path.dirname(__file__) + '/..'!r})
        from treeutil import make_tar
        from storagekit.drivers.overlay import OverlayDriver
        d = OverlayDriver({str(tmp_path / 'ov')!r})
        assert d.userxattr and d.dialect == "overlay-user"
        d.create("base")
        d.apply_diff("base", None, io.BytesIO(make_tar([
            {{"name": "d", "type": "dir"}}, {{"name": "d/a", "data": b"a"}}])))
        d.create_rw("c", "base")
        p = d.get("c")
        assert "userxattr" in open("/proc/self/mounts").read()
        import subprocess
        subprocess.run(["rm", "-rf", p + "/d"], check=True)
        os.mkdir(p + "/d")
        d.put("c")
        assert os.getxattr({str(tmp_path / 'ov/layers/c/diff/d')!r}, "user.overlay.opaque") == b"y"
        data = d.diff("c", "base").read()
        assert b"d/.wh..wh..opq" in data
        print("ok")
    """)
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable,
                           "-c", code], capture_output=True, text=True)
    if proc.returncode != 0 and proc.stderr.startswith("unshare:"):
        pytest.skip("user namespaces are not available")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------------------------- deep stacks

DEPTHS = [1, 2, 128, 129, 500, 501, 1000]


def layer_tar(i: int) -> bytes:
    """Layer i adds a file, rewrites a shared file, deletes the file of layer i-2, and every
    50th layer makes a directory opaque."""
    entries = [
        {"name": "layers", "type": "dir"},
        {"name": f"layers/f{i:04d}", "data": f"layer {i}\n".encode()},
        {"name": "shared", "data": f"written by {i}\n".encode(), "mtime": 1_700_000_000 + i},
        {"name": "cycle", "type": "dir"},
        {"name": f"cycle/c{i:04d}", "data": b"c"},
    ]
    if i > 2:
        entries.append({"name": f"layers/.wh.f{i - 2:04d}", "data": b""})
    if i % 50 == 0:
        entries.append({"name": "cycle/.wh..wh..opq", "data": b""})
    return make_tar(entries)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """1,000 layers on one driver home, and the flat apply of the same tars for each depth."""
    home = tmp_path_factory.mktemp("stack")
    driver = OverlayDriver(home / "overlay")
    flat = home / "flat"
    flat.mkdir()
    expected = {}
    parent = None
    for i in range(1, max(DEPTHS) + 1):
        data = layer_tar(i)
        lid = f"l{i:04d}"
        driver.create(lid, parent)
        driver.apply_diff(lid, parent, io.BytesIO(data))
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        _native.apply_tar(r, str(flat))
        os.close(r)
        if i in DEPTHS:
            expected[i] = describe(flat)
        parent = lid
    yield home, expected
    for api in APIS:
        OverlayDriver(home / "overlay", {"overlay.mount_api": api}).cleanup()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_stack_equals_flat_apply(stack, depth, api):
    home, expected = stack
    driver = OverlayDriver(home / "overlay", {"overlay.mount_api": api})
    top = f"l{depth:04d}"
    with mounted(driver, top) as path:
        assert describe(path) == expected[depth]
    ctr = f"ctr-{api}-{depth}"
    driver.create_rw(ctr, top)
    try:
        with mounted(driver, ctr) as path:
            assert describe(path) == expected[depth]
            os.unlink(os.path.join(path, "shared"))
            with open(os.path.join(path, "mine"), "w") as f:
                f.write("container")
        changes = {(c.path, int(c.kind)) for c in driver.changes(ctr, top)}
        assert changes == {("/shared", 2), ("/mine", 1)}
        lowers = driver.metadata(ctr)["LowerDir"].split(":")
        assert len(lowers) <= driver._max_lowers()
        if depth > driver._max_lowers():
            assert any("/flat/" in p for p in lowers)
    finally:
        driver.remove(ctr)
