"""Every driver, given the same layers, shows the same thing: the same visible tree, the same
`changes` and diffs with the same effect — in the cases where they used to disagree (a root
opaque marker, a hardlink to a parent's file, `rmdir d; mkdir d`).

Unlike the rest of the suite, each test runs all drivers side by side and compares them with
each other, on the temporary directory's filesystem and on xfs.
"""

from __future__ import annotations

import io
import os
import tarfile
from contextlib import ExitStack

import pytest
from treeutil import describe, make_tar

from storagekit import registry
from storagekit.driver import Driver

DRIVERS = sorted(registry.available())  # as the suite's conftest has them

# Drivers whose diff against the direct parent is exported from the layer's own directory,
# markers as stored; the others compare trees (the naive diff).
NATIVE = {"overlay", "aufs"}

BASE = [
    {"name": "bin", "type": "dir"},
    {"name": "bin/sh", "data": b"#!sh\n" * 50, "mode": 0o755},
    {"name": "bin/ls", "type": "hardlink", "link": "bin/sh"},
    {"name": "etc", "type": "dir", "mode": 0o750},
    {"name": "etc/hostname", "data": b"base\n"},
    {"name": "opt", "type": "dir"},
    {"name": "opt/sub", "type": "dir"},
    {"name": "opt/sub/deep", "data": b"deep", "uid": 1000, "gid": 1000},
    {"name": "empty", "type": "dir"},
    {"name": "spare", "type": "dir"},
]


@pytest.fixture
def drivers(backing):
    """One instance of every registered driver, homes side by side on `backing`."""
    out: dict[str, Driver] = {}
    with ExitStack() as stack:
        for name in DRIVERS:
            cls = registry.driver_class(name)
            ok, reason = cls.probe(backing)
            if not ok:
                pytest.skip(f"the drivers cannot all be compared here: {name}: {reason}")
            d = cls(backing / name)
            stack.callback(d.cleanup)
            out[name] = d
        assert len(out) >= 2, f"nothing to compare: {DRIVERS}"
        yield out


def on_all(drivers: dict[str, Driver], layer: str, parent: str | None, tar: bytes) -> None:
    for d in drivers.values():
        d.create(layer, parent)
        d.apply_diff(layer, parent, io.BytesIO(tar))


def trees(drivers: dict[str, Driver], layer: str) -> dict[str, dict]:
    out = {}
    for name, d in drivers.items():
        path = d.get(layer)
        try:
            out[name] = describe(path)
        finally:
            d.put(layer)
    return out


def changes(drivers: dict[str, Driver], layer: str, parent: str) -> dict[str, list]:
    return {name: sorted((c.path, c.kind.name) for c in d.changes(layer, parent))
            for name, d in drivers.items()}


def members(data: bytes) -> list[tuple]:
    """A tar's entries as (name, type, content or link target, mode, uid, gid). Whiteouts and
    opaque markers are compared by name only: their metadata means nothing (aufs keeps the
    mode a tar gave them, overlay stores none)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            name = m.name.rstrip("/")
            if os.path.basename(name).startswith(".wh."):
                out.append((name, m.type, b""))
                continue
            body = tar.extractfile(m).read() if m.isreg() else m.linkname
            out.append((name, m.type, body, m.mode, m.uid, m.gid))
    return out


def diffs(drivers: dict[str, Driver], layer: str, parent: str | None) -> dict[str, bytes]:
    return {name: d.diff(layer, parent).read() for name, d in drivers.items()}


def effects(drivers: dict[str, Driver], parent: str, data: dict[str, bytes]) -> dict[str, dict]:
    """What each driver's diff does, applied on `parent` by every driver: one tree each."""
    out = {}
    for origin, tar in data.items():
        for name, d in drivers.items():
            layer = f"effect-of-{origin}"
            d.create(layer, parent)
            d.apply_diff(layer, parent, io.BytesIO(tar))
            out[f"{origin} applied by {name}"] = trees({name: d}, layer)[name]
    return out


def assert_same(by_driver: dict) -> None:
    first_name, first = next(iter(by_driver.items()))
    for name, value in by_driver.items():
        assert value == first, f"{name} disagrees with {first_name}"


def test_a_root_opaque_marker_hides_every_parent(drivers):
    on_all(drivers, "base", None, make_tar(BASE))
    on_all(drivers, "top", "base", make_tar([
        {"name": "./", "type": "dir"},
        {"name": ".wh..wh..opq", "data": b""},
        {"name": "new", "type": "dir"},
        {"name": "new/file", "data": b"only me"},
        {"name": "etc", "type": "dir", "mode": 0o700},  # a parent's name, made again
        {"name": "etc/motd", "data": b"hi"},
    ]))
    seen = trees(drivers, "top")
    assert_same(seen)
    assert sorted(seen["vfs"]) == ["/etc", "/etc/motd", "/new", "/new/file"]
    assert seen["vfs"]["/etc"]["mode"] == 0o700

    found = changes(drivers, "top", "base")
    assert_same(found)
    assert found["vfs"] == sorted([
        ("/bin", "DELETE"), ("/empty", "DELETE"), ("/opt", "DELETE"), ("/spare", "DELETE"),
        ("/etc", "MODIFY"),
        ("/etc/hostname", "DELETE"), ("/etc/motd", "ADD"), ("/new", "ADD"),
        ("/new/file", "ADD")])

    data = diffs(drivers, "top", "base")
    for name in NATIVE & set(data):  # the marker is stored, so it goes out again
        assert members(data[name])[0][0] == ".wh..wh..opq", name
    assert_same({n: members(t) for n, t in data.items() if n in NATIVE})
    assert_same({n: members(t) for n, t in data.items() if n not in NATIVE})
    assert_same({"top": seen["vfs"], **effects(drivers, "base", data)})

    # the whole layer, parents included, is the same tar everywhere
    assert_same(diffs(drivers, "top", None))

    # and a child of the layer sees the same
    for d in drivers.values():
        d.create_rw("child", "top")
    assert_same({"top": seen["vfs"], **trees(drivers, "child")})


def test_a_hardlink_to_a_file_of_a_parent_layer(drivers):
    on_all(drivers, "base", None, make_tar(BASE))
    on_all(drivers, "mid", "base", make_tar([
        {"name": "opt", "type": "dir"},
        {"name": "opt/mid", "data": b"from mid", "mode": 0o600, "uid": 7},
    ]))
    on_all(drivers, "top", "mid", make_tar([
        {"name": "usr", "type": "dir"},
        {"name": "usr/sh", "type": "hardlink", "link": "bin/sh"},
        {"name": "usr/deep", "type": "hardlink", "link": "opt/sub/deep"},  # two layers down
        {"name": "usr/mid", "type": "hardlink", "link": "opt/mid"},
    ]))
    seen = trees(drivers, "top")
    assert_same(seen)
    tree = seen["vfs"]
    # every name of a file is one file, its names in the parent included
    for new, old in [("/usr/sh", "/bin/ls"), ("/bin/sh", "/bin/ls"),
                     ("/usr/deep", "/opt/sub/deep"), ("/usr/mid", "/opt/mid")]:
        assert tree[new]["link_group"] == tree[old]["link_group"] == old
    assert tree["/opt/mid"]["uid"] == 7 and tree["/opt/sub/deep"]["uid"] == 1000

    found = changes(drivers, "top", "mid")
    assert_same(found)
    assert found["vfs"] == sorted([
        ("/bin", "MODIFY"), ("/bin/ls", "MODIFY"), ("/bin/sh", "MODIFY"), ("/opt", "MODIFY"),
        ("/opt/mid", "MODIFY"), ("/opt/sub", "MODIFY"), ("/opt/sub/deep", "MODIFY"),
        ("/usr", "ADD"), ("/usr/deep", "ADD"), ("/usr/mid", "ADD"), ("/usr/sh", "ADD")])

    data = diffs(drivers, "top", "mid")
    assert_same({n: members(t) for n, t in data.items()})
    assert_same({"top": tree, **effects(drivers, "mid", data)})


def test_a_hardlink_to_what_a_layer_deleted_is_refused_everywhere(drivers):
    on_all(drivers, "base", None, make_tar(BASE))
    tar = make_tar([
        {"name": "bin/.wh.sh", "data": b""},
        {"name": "link", "type": "hardlink", "link": "bin/sh"},
    ])
    errors = {}
    for name, d in drivers.items():
        d.create("top", "base")
        with pytest.raises(Exception) as info:
            d.apply_diff("top", "base", io.BytesIO(tar))
        errors[name] = type(info.value).__name__
    assert set(errors.values()) == {"InvalidArchive"}, errors


def test_rmdir_and_mkdir_is_a_change_on_every_driver(drivers):
    on_all(drivers, "base", None, make_tar(BASE))
    for d in drivers.values():
        d.create_rw("c", "base")
        path = d.get("c")
        try:
            os.rmdir(os.path.join(path, "empty"))
            os.mkdir(os.path.join(path, "empty"), 0o755)
            os.chmod(os.path.join(path, "spare"), 0o700)  # changed, but the same directory
        finally:
            d.put("c")
    seen = trees(drivers, "c")
    assert_same(seen)

    found = changes(drivers, "c", "base")
    assert_same(found)
    assert found["vfs"] == [("/empty", "MODIFY"), ("/spare", "MODIFY")]

    data = diffs(drivers, "c", "base")
    listed = {n: [m[:3] for m in members(t)] for n, t in data.items()}
    assert_same(listed)
    assert listed["vfs"] == [("empty", tarfile.DIRTYPE, ""),
                             ("empty/.wh..wh..opq", tarfile.REGTYPE, b""),
                             ("spare", tarfile.DIRTYPE, "")]
    assert_same({"c": seen["vfs"], **effects(drivers, "base", data)})


def test_a_second_diff_onto_the_same_layer_acts_on_what_it_holds(drivers):
    """A tar applied onto a layer that already has content (`layer apply`, Docker's ApplyDiff
    after writes): its whiteouts and opaque directories take away what the layer itself held
    as well as what its parents have, on every driver (aufs kept the layer's own file beside
    its whiteout, and overlay and aufs kept a directory's own entries under an opaque marker).
    """
    on_all(drivers, "base", None, make_tar(BASE))
    on_all(drivers, "top", "base", make_tar([
        {"name": "etc", "type": "dir", "mode": 0o750},
        {"name": "etc/motd", "data": b"hi"},
        {"name": "opt", "type": "dir"},
        {"name": "opt/sub", "type": "dir"},
        {"name": "opt/sub/more", "data": b"mine"},
        {"name": "opt/sub/dir", "type": "dir"},
        {"name": "opt/sub/dir/f", "data": b"f"},
        {"name": "keep", "data": b"k"},
    ]))
    second = make_tar([
        {"name": "etc", "type": "dir", "mode": 0o750},
        {"name": "etc/.wh.motd", "data": b""},       # the layer's own file
        {"name": "etc/.wh.hostname", "data": b""},   # a parent's file
        {"name": "opt", "type": "dir"},
        {"name": "opt/sub", "type": "dir"},
        {"name": "opt/sub/.wh..wh..opq", "data": b""},
        {"name": "opt/sub/new", "data": b"n"},
        {"name": ".wh.keep", "data": b""},
        {"name": "keep", "data": b"again"},         # removed, then made again by this tar
    ])
    for d in drivers.values():
        d.apply_diff("top", "base", io.BytesIO(second))
    seen = trees(drivers, "top")
    assert_same(seen)
    visible = set(seen["vfs"])
    assert {"/etc/motd", "/etc/hostname", "/opt/sub/deep", "/opt/sub/more",
            "/opt/sub/dir"} & visible == set()
    assert {"/etc", "/opt/sub/new", "/keep", "/bin/sh"} <= visible
    for name, d in drivers.items():
        path = d.get("top")
        try:
            assert open(os.path.join(path, "keep"), "rb").read() == b"again", name
        finally:
            d.put("top")
    assert_same(changes(drivers, "top", "base"))
