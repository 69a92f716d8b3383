"""The graphdriver contract, checked on every registered driver."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import textwrap

import pytest
from treeutil import describe, make_tar, tar_names

from storagekit.driver import ApplyResult, ChangeKind, Driver, Mount
from storagekit.errors import (
    InvalidArchive,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerNotMounted,
)

BASE = [
    {"name": "etc", "type": "dir"},
    {"name": "etc/hostname", "data": b"base\n"},
    {"name": "etc/passwd", "data": b"root:x:0:0::/root:/bin/sh\n"},
    {"name": "bin", "type": "dir"},
    {"name": "bin/sh", "data": b"#!binary\n" * 100, "mode": 0o755},
    {"name": "bin/link", "type": "symlink", "link": "sh"},
    {"name": "bin/hard", "type": "hardlink", "link": "bin/sh", "mode": 0o755},
    {"name": "var", "type": "dir"},
    {"name": "var/lib", "type": "dir"},
    {"name": "var/lib/a", "data": b"a"},
    {"name": "var/lib/b", "data": b"bb"},
    {"name": "opt", "type": "dir", "mode": 0o700},
    {"name": "opt/old1", "data": b"old1"},
    {"name": "opt/sub", "type": "dir"},
    {"name": "opt/sub/old2", "data": b"old2"},
    {"name": "tmp", "type": "dir", "mode": 0o1777},
    {"name": "usr", "type": "dir"},
    {"name": "usr/bin", "type": "dir"},
    {"name": "usr/bin/sudo", "data": b"sudo", "mode": 0o4755, "uid": 0},
    {"name": "home", "type": "dir"},
    {"name": "home/user", "type": "dir", "uid": 1000, "gid": 1000},
    {"name": "home/user/notes", "data": b"notes", "uid": 1000, "gid": 1000,
     "xattrs": {"user.origin": "base"}},
]


def make_base(driver: Driver, layer_id: str = "base") -> ApplyResult:
    driver.create(layer_id, None)
    data = make_tar(BASE)
    result = driver.apply_diff(layer_id, None, io.BytesIO(data))
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    return result


def mounted(driver: Driver, layer_id: str):
    class _Ctx:
        def __enter__(self):
            self.path = driver.get(layer_id)
            return self.path

        def __exit__(self, *exc):
            driver.put(layer_id)

    return _Ctx()


def change_things(root: str) -> None:
    """The edits a container makes: add, modify, delete, replace a directory, chmod, xattr."""
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("child\n")
    os.unlink(os.path.join(root, "var/lib/a"))
    os.makedirs(os.path.join(root, "srv/data"))
    with open(os.path.join(root, "srv/data/new"), "wb") as f:
        f.write(b"new file")
    # replace a directory: everything old goes, a new child arrives
    subprocess.run(["rm", "-rf", os.path.join(root, "opt")], check=True)
    os.mkdir(os.path.join(root, "opt"), 0o750)
    with open(os.path.join(root, "opt/fresh"), "w") as f:
        f.write("fresh")
    os.chmod(os.path.join(root, "etc/passwd"), 0o600)
    os.setxattr(os.path.join(root, "home/user/notes"), "user.origin", b"child")
    os.unlink(os.path.join(root, "bin/link"))
    os.symlink("/bin/sh", os.path.join(root, "bin/link"))


# ------------------------------------------------------------------------------- lifecycle


def test_create_base_layer_is_empty_root_0755(driver):
    driver.create("a")
    assert driver.exists("a")
    assert not driver.exists("b")
    assert driver.parent("a") is None
    with mounted(driver, "a") as path:
        assert os.listdir(path) == []
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755


def test_create_twice_fails(driver):
    driver.create("a")
    with pytest.raises(LayerExists):
        driver.create("a")
    with pytest.raises(LayerExists):
        driver.create_rw("a")


def test_create_on_missing_parent_fails(driver):
    with pytest.raises(LayerNotFound):
        driver.create("child", "nope")
    assert not driver.exists("child")


def test_parent_chain_content(driver):
    make_base(driver)
    driver.create("mid", "base")
    with mounted(driver, "mid") as path:
        assert describe(path) == describe_base(driver)
    driver.apply_diff("mid", "base", io.BytesIO(make_tar([
        {"name": "etc", "type": "dir"},
        {"name": "etc/mid", "data": b"mid"},
    ])))
    driver.create_rw("top", "mid")
    assert driver.parent("top") == "mid"
    with mounted(driver, "top") as path:
        assert open(os.path.join(path, "etc/mid"), "rb").read() == b"mid"
        assert open(os.path.join(path, "etc/hostname"), "rb").read() == b"base\n"
        st = os.lstat(os.path.join(path, "bin/hard"))
        assert st.st_ino == os.lstat(os.path.join(path, "bin/sh")).st_ino
        assert os.readlink(os.path.join(path, "bin/link")) == "sh"
        assert stat.S_IMODE(os.lstat(os.path.join(path, "usr/bin/sudo")).st_mode) == 0o4755
        assert os.lstat(os.path.join(path, "home/user")).st_uid == 1000
        assert os.getxattr(os.path.join(path, "home/user/notes"), "user.origin") == b"base"


def describe_base(driver: Driver) -> dict:
    with mounted(driver, "base") as path:
        return describe(path)


def test_rw_layer_writes_stay_in_that_layer(driver):
    make_base(driver)
    before = describe_base(driver)
    driver.create_rw("c1", "base")
    driver.create_rw("c2", "base")
    with mounted(driver, "c1") as path:
        change_things(path)
    with mounted(driver, "c2") as path:
        assert describe(path) == before
    assert describe_base(driver) == before


# ------------------------------------------------------------------------------- get / put


def test_get_put_reference_counting(driver):
    driver.create_rw("a")
    p1 = driver.get("a")
    p2 = driver.get("a")
    assert p1 == p2
    assert driver.refcount("a") == 2
    driver.put("a")
    assert driver.refcount("a") == 1
    with open(os.path.join(p1, "still-there"), "w") as f:  # still mounted after one put
        f.write("x")
    driver.put("a")
    assert driver.refcount("a") == 0
    with pytest.raises(LayerNotMounted):
        driver.put("a")
    with mounted(driver, "a") as path:
        assert os.listdir(path) == ["still-there"]


def test_get_missing_layer(driver):
    with pytest.raises(LayerNotFound):
        driver.get("missing")


def test_refcount_holds_across_processes(driver):
    driver.create_rw("a")
    path = driver.get("a")
    code = textwrap.dedent(f"""
        from storagekit import registry
        d = registry.driver_class({driver.name!r})({str(driver.home)!r})
        assert d.refcount("a") == 1, d.refcount("a")
        p = d.get("a")
        assert p == {path!r}, p
        assert d.refcount("a") == 2
        d.put("a")
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert driver.refcount("a") == 1
    driver.put("a")
    assert driver.refcount("a") == 0


# ------------------------------------------------------------------------------- remove


def test_remove_rules(driver):
    driver.create_rw("a")
    driver.get("a")
    with pytest.raises(LayerInUse):
        driver.remove("a")
    assert driver.exists("a")
    driver.put("a")
    driver.remove("a")
    assert not driver.exists("a")
    driver.remove("a")  # removing what is not there is not an error
    driver.create("a")  # the id can be used again
    assert driver.exists("a")


# ------------------------------------------------------------------------------- diffs


def test_diff_apply_round_trip_with_whiteouts_and_opaque_dirs(driver):
    make_base(driver)
    driver.create_rw("child", "base")
    with mounted(driver, "child") as path:
        change_things(path)
        expected = describe(path)
    diff = driver.diff("child", "base").read()
    names = tar_names(diff)
    assert "var/lib/.wh.a" in names
    assert "srv/data/new" in names
    assert not any(n.startswith("usr") for n in names)  # untouched parts are not in the diff
    driver.create("copy", "base")
    result = driver.apply_diff("copy", "base", io.BytesIO(diff))
    assert result.diff_id == "sha256:" + hashlib.sha256(diff).hexdigest()
    with mounted(driver, "copy") as path:
        assert describe(path) == expected


def test_apply_opaque_directory_hides_lower_entries(driver):
    make_base(driver)
    driver.create("upper", "base")
    driver.apply_diff("upper", "base", io.BytesIO(make_tar([
        {"name": "opt", "type": "dir"},
        {"name": "opt/kept", "data": b"new"},  # before the marker: must survive it
        {"name": "opt/.wh..wh..opq", "data": b""},
        {"name": "var/lib/.wh.b", "data": b""},
        {"name": "etc/.wh.passwd", "data": b""},
    ])))
    with mounted(driver, "upper") as path:
        assert sorted(os.listdir(os.path.join(path, "opt"))) == ["kept"]
        assert os.listdir(os.path.join(path, "var/lib")) == ["a"]
        assert sorted(os.listdir(os.path.join(path, "etc"))) == ["hostname"]
        assert not any(n.startswith(".wh.") for _, d, f in os.walk(path) for n in d + f)
    # and what comes out again is the same change
    driver.create("again", "base")
    driver.apply_diff("again", "base", driver.diff("upper", "base"))
    with mounted(driver, "again") as a, mounted(driver, "upper") as u:
        assert describe(a) == describe(u)


def test_full_diff_without_parent(driver):
    make_base(driver)
    driver.create("child", "base")
    data = driver.diff("child", None).read()
    names = set(tar_names(data))
    assert {"etc/hostname", "bin/sh", "bin/hard", "home/user/notes"} <= names
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("bin/hard").islnk() or tar.getmember("bin/sh").islnk()
    driver.create("flat")
    driver.apply_diff("flat", None, io.BytesIO(data))
    with mounted(driver, "flat") as f, mounted(driver, "child") as c:
        assert describe(f) == describe(c)


def test_changes(driver):
    make_base(driver)
    driver.create_rw("child", "base")
    with mounted(driver, "child") as path:
        change_things(path)
    changes = {(c.path, c.kind) for c in driver.changes("child", "base")}
    expected = {
        ("/etc", ChangeKind.MODIFY),
        ("/etc/hostname", ChangeKind.MODIFY),
        ("/etc/passwd", ChangeKind.MODIFY),
        ("/var", ChangeKind.MODIFY),
        ("/var/lib", ChangeKind.MODIFY),
        ("/var/lib/a", ChangeKind.DELETE),
        ("/srv", ChangeKind.ADD),
        ("/srv/data", ChangeKind.ADD),
        ("/srv/data/new", ChangeKind.ADD),
        ("/opt", ChangeKind.MODIFY),
        ("/opt/old1", ChangeKind.DELETE),
        ("/opt/sub", ChangeKind.DELETE),
        ("/opt/fresh", ChangeKind.ADD),
        ("/home", ChangeKind.MODIFY),
        ("/home/user", ChangeKind.MODIFY),
        ("/home/user/notes", ChangeKind.MODIFY),
        ("/bin", ChangeKind.MODIFY),
        ("/bin/link", ChangeKind.MODIFY),
    }
    assert changes == expected
    all_added = driver.changes("base", None)
    assert all(c.kind == ChangeKind.ADD for c in all_added)
    assert {c.path for c in all_added} >= {"/etc/hostname", "/home/user/notes", "/bin/hard"}


def test_diff_size(driver):
    make_base(driver)
    driver.create_rw("child", "base")
    with mounted(driver, "child") as path:
        change_things(path)
    # modified etc/hostname (6) + etc/passwd (26, chmod) + notes (5, xattr) + new (8) + fresh (5)
    assert driver.diff_size("child", "base") == 6 + 26 + 5 + 8 + 5
    # the whole base: regular-file bytes, the hardlinked sh counted once
    expected = sum(len(e.get("data", b"")) for e in BASE if e.get("type", "file") == "file")
    assert driver.diff_size("base", None) == expected


def test_apply_rejects_escape_and_leaves_outside_alone(driver, tmp_path):
    driver.create("l")
    outside = tmp_path / "outside-marker"
    evil = make_tar([{"name": "../outside-marker", "data": b"pwned"}])
    with pytest.raises(InvalidArchive):
        driver.apply_diff("l", None, io.BytesIO(evil))
    assert not outside.exists()


def test_apply_compressed(driver):
    import gzip

    data = make_tar(BASE)
    driver.create("gz")
    result = driver.apply_diff("gz", None, io.BytesIO(gzip.compress(data)))
    assert result.compression == "gzip"
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    make_base(driver)
    with mounted(driver, "gz") as g:
        assert describe(g) == describe_base(driver)


# ------------------------------------------------------------------------------- status, metadata


def test_status_metadata_mounts(driver):
    make_base(driver)
    driver.create_rw("child", "base")
    status = driver.status()
    assert status and all(isinstance(k, str) and isinstance(v, str) for k, v in status)
    assert "Backing Filesystem" in dict(status)
    meta = driver.metadata("child")
    assert isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    mounts = driver.mounts("child")
    assert mounts and all(isinstance(m, Mount) and m.type and m.source for m in mounts)
    with pytest.raises(LayerNotFound):
        driver.metadata("missing")


def test_mounts_as_data_can_be_mounted(driver, tmp_path):
    """What mounts() returns, mounted by someone else (as containerd would), shows the layer."""
    make_base(driver)
    driver.create_rw("child", "base")
    with mounted(driver, "child") as path:
        change_things(path)
        expected = describe(path)
    target = tmp_path / "target"
    target.mkdir()
    mounts = driver.mounts("child")
    assert len(mounts) == 1
    m = mounts[0]
    subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options), m.source, str(target)],
                   check=True)
    try:
        assert describe(target) == expected
    finally:
        subprocess.run(["umount", str(target)], check=True)
