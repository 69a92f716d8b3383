"""What the engine leaves in the writable branch (exactly the aufs/OCI format: whiteout files,
opaque markers, copies), and stacks of many branches."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from treeutil import describe
from unionutil import CAP_NET_RAW, Stacks, apply_layer

from storagekit import _native as n
from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")

BOOKKEEPING = {"/.wh..wh.aufs", "/.wh..wh.plnk", "/.wh..wh.orph"}


def tree_kinds(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            out["/" + os.path.relpath(p, root)] = kind
    return out


def test_writable_branch_is_an_aufs_layer(stacks: Stacks, tmp_path: Path) -> None:
    u = stacks.union()
    rw = stacks.rw
    with open(u / "etc/hosts", "ab") as f:
        f.write(b"changed\n")
    os.unlink(u / "etc/passwd")
    os.rmdir(u / "empty")
    os.unlink(u / "del/keep.txt")
    os.rmdir(u / "del")
    os.mkdir(u / "del")  # over the whiteout just made: opaque
    (u / "del/new").write_bytes(b"new")
    os.rename(u / "tree", u / "moved")  # merged directory: copied up, opaque
    (u / "newfile").write_bytes(b"n")
    os.chmod(u / "bin/tool", 0o700)  # hardlinked in its layer: both names come up
    os.link(u / "etc/conf.d/a", u / "a.link")
    os.symlink("target", u / "usr/sl")
    view = describe(u, times=False)
    assert tree_kinds(rw).keys() - BOOKKEEPING - {
        f for f in tree_kinds(rw) if f.startswith(("/.wh..wh.plnk/", "/.wh..wh.orph/"))
    } == {
        "/etc",
        "/etc/hosts",
        "/etc/.wh.passwd",
        "/etc/conf.d",
        "/etc/conf.d/a",
        "/.wh.empty",
        "/del",
        "/del/.wh..wh..opq",
        "/del/new",
        "/moved",
        "/moved/.wh..wh..opq",
        "/moved/top",
        "/moved/sub",
        "/moved/sub/leaf",
        "/moved/sub/leaf2",
        "/.wh.tree",
        "/newfile",
        "/bin",
        "/bin/tool",
        "/bin/tool-link",
        "/a.link",
        "/usr",
        "/usr/sl",
    }
    # pseudo-links of the hardlinked files copied up, named "<union ino>.<branch ino>"
    plinks = sorted(os.listdir(rw / ".wh..wh.plnk"))
    ino_tool, ino_a = os.stat(u / "bin/tool").st_ino, os.stat(u / "a.link").st_ino
    assert [p.split(".")[0] for p in plinks] == sorted([str(ino_tool), str(ino_a)])
    for p in plinks:
        assert int(p.split(".")[1]) in (
            os.stat(rw / "bin/tool").st_ino,
            os.stat(rw / "a.link").st_ino,
        )
    assert os.stat(rw / "bin/tool").st_ino == os.stat(rw / "bin/tool-link").st_ino
    assert os.stat(rw / "etc/conf.d/a").st_ino == os.stat(rw / "a.link").st_ino
    # whiteouts and opaque markers are empty files sharing the branch's whiteout base
    base = os.stat(rw / ".wh..wh.aufs")
    for marker in (
        "etc/.wh.passwd",
        ".wh.empty",
        ".wh.tree",
        "del/.wh..wh..opq",
        "moved/.wh..wh..opq",
    ):
        st = os.lstat(rw / marker)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
        assert st.st_ino == base.st_ino
    union.stop(u)
    stacks.unions.remove(u)
    assert os.listdir(rw / ".wh..wh.plnk") == [] and os.listdir(rw / ".wh..wh.orph") == []
    # the branch is an OCI layer: exported and applied over the lower layers, it gives the
    # tree the union showed
    tar = tmp_path / "layer.tar"
    with open(tar, "wb") as f:
        n.export_tar(str(rw), f.fileno(), dialect="oci")
    flat = tmp_path / "flat"
    for i, data in enumerate([*stacks.tars, tar.read_bytes()]):
        apply_layer(data, flat, "none")
        if i == 0:  # the lower layers' capability was set after they were applied
            os.setxattr(flat / "bin/ping", "security.capability", CAP_NET_RAW)
    assert describe(flat, times=False) == view


def test_thousand_branches(tmp_path: Path) -> None:
    count = 1000
    branches = []
    for k in range(count):  # k = 0 is the bottom
        b = tmp_path / f"b{k:04d}"
        (b / "d").mkdir(parents=True)
        (b / f"f{k}").write_bytes(str(k).encode())
        (b / "d" / f"x{k}").write_bytes(b"")
        (b / "shadow").write_bytes(str(k).encode())
        if k % 100 == 50:  # whiteouts of the branch below
            (b / f".wh.f{k - 1}").write_bytes(b"")
            (b / "d" / f".wh.x{k - 1}").write_bytes(b"")
        branches.append(b)
    (branches[100] / "op").mkdir()
    (branches[100] / "op/bottom").write_bytes(b"")
    (branches[500] / "op").mkdir()
    (branches[500] / "op/.wh..wh..opq").write_bytes(b"")
    (branches[500] / "op/top").write_bytes(b"")
    rw, mnt = tmp_path / "rw", tmp_path / "mnt"
    rw.mkdir()
    mnt.mkdir()
    union.start(mnt, [rw, *reversed(branches)])
    try:
        hidden = {k - 1 for k in range(count) if k % 100 == 50}
        expect = {f"f{k}" for k in range(count) if k not in hidden} | {"d", "shadow", "op"}
        assert set(os.listdir(mnt)) == expect
        assert set(os.listdir(mnt / "d")) == {f"x{k}" for k in range(count) if k not in hidden}
        assert os.listdir(mnt / "op") == ["top"]
        assert (mnt / "shadow").read_bytes() == b"999"
        assert (mnt / "f0").read_bytes() == b"0"
        assert not (mnt / "f49").exists()
        ino = os.stat(mnt / "f0").st_ino
        with open(mnt / "f0", "ab") as f:  # copy-up from the bottom of the stack
            f.write(b"+")
        assert (rw / "f0").read_bytes() == b"0+"
        assert os.stat(mnt / "f0").st_ino == ino
        os.unlink(mnt / "f1")
        assert (rw / ".wh.f1").exists() and not (mnt / "f1").exists()
    finally:
        union.stop(mnt)


def test_half_made_copy_stays_out_of_the_union_and_its_layer(
    stacks: Stacks, tmp_path: Path
) -> None:
    """Copies are made beside their final name under a bookkeeping name: one a crashed engine
    left behind is never shown, does not disturb copy-ups beside it, and is no layer content."""
    import tarfile

    u = stacks.union()
    with open(u / "etc/hosts", "ab") as f:
        f.write(b"changed\n")
    stale = ".wh..wh.cpup.1.0.1"
    (stacks.rw / "etc" / stale).write_bytes(b"half")
    assert stale not in os.listdir(u / "etc")
    assert not os.path.lexists(u / "etc" / stale)
    os.chmod(u / "etc/passwd", 0o600)  # another copy-up in the same directory
    assert sorted(x for x in os.listdir(stacks.rw / "etc") if x.startswith(".wh.")) == [stale]
    tar = tmp_path / "layer.tar"
    with open(tar, "wb") as f:
        n.export_tar(str(stacks.rw), f.fileno(), dialect="oci")
    with tarfile.open(tar) as t:
        names = t.getnames()
    assert "etc/passwd" in [x.lstrip("./") for x in names]
    assert not [x for x in names if "cpup" in x]
