"""Prepare, View, Mounts, Commit, Remove, Stat, Usage on every driver, through a real server,
with the mounts it returns mounted for real."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import grpc
from serverutil import _mount_argv, mounted, readonly_for_real
from snapclient import KIND, code_of


def test_prepare_write_commit_view(client, tmp_path):
    before = time.time()
    mounts = client.prepare("default/1/extract-1 sha256:aaa", labels={"l": "1"})
    with mounted(mounts, tmp_path / "m") as root:
        assert not readonly_for_real(root)
        (root / "etc").mkdir()
        (root / "etc/hostname").write_text("base\n")
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    info = client.stat("default/1/extract-1 sha256:aaa")
    assert KIND[info.kind] == "active" and info.parent == "" and dict(info.labels) == {"l": "1"}
    assert info.created_at.seconds >= int(before) - 1

    client.commit("sha256:base", "default/1/extract-1 sha256:aaa", labels={"c": "2"})
    assert code_of(client.stat, "default/1/extract-1 sha256:aaa") == grpc.StatusCode.NOT_FOUND
    info = client.stat("sha256:base")
    assert KIND[info.kind] == "committed" and dict(info.labels) == {"c": "2"}
    # as containerd's own: the committed snapshot is a new record, made at the commit
    assert info.updated_at == info.created_at
    assert info.created_at.ToNanoseconds() > client.list()[0].created_at.ToNanoseconds() - 1

    # a committed snapshot and a view of it mount read-only, for real
    with mounted(client.mounts("sha256:base"), tmp_path / "c") as root:
        assert readonly_for_real(root)
        assert (root / "etc/hostname").read_text() == "base\n"
    view = client.view("v1", "sha256:base")
    assert KIND[client.stat("v1").kind] == "view" and client.stat("v1").parent == "sha256:base"
    with mounted(view, tmp_path / "v") as root:
        assert readonly_for_real(root)
        assert (root / "etc/hostname").read_text() == "base\n"
    assert client.mounts("v1") == view

    # an active child sees its parent's content and writes its own
    child = client.prepare("c1", "sha256:base")
    assert client.mounts("c1") == child
    with mounted(child, tmp_path / "k") as root:
        assert (root / "etc/hostname").read_text() == "base\n"
        (root / "etc/hostname").write_text("child\n")
        (root / "new").write_bytes(b"x" * 10000)
    client.commit("layer2", "c1")
    with mounted(client.mounts("layer2"), tmp_path / "l2") as root:
        assert (root / "etc/hostname").read_text() == "child\n"
        assert readonly_for_real(root)
    with mounted(client.mounts("sha256:base"), tmp_path / "c") as root:
        assert (root / "etc/hostname").read_text() == "base\n"  # the parent kept its own

    size, inodes = client.usage("layer2")
    assert size >= 10000 and inodes >= 2

    # parents go last: FailedPrecondition while a child exists
    assert code_of(client.remove, "sha256:base") == grpc.StatusCode.FAILED_PRECONDITION
    client.remove("layer2")
    client.remove("v1")
    client.remove("sha256:base")
    assert client.list() == []


def test_whiteouts_land_in_the_drivers_format(client, server, tmp_path):
    """A file deleted and a directory made opaque through a child's mount, as containerd's
    applier does it: the committed child hides them, in the driver's own format."""
    with mounted(client.prepare("a"), tmp_path / "a") as root:
        (root / "gone").write_text("x")
        (root / "dir").mkdir()
        (root / "dir/old").write_text("x")
    client.commit("base", "a")
    mounts = client.prepare("b", "base")
    expected_type = {"vfs": "bind", "overlay": "overlay", "devicemapper": "ext4",
                     "aufs": "fuse.storagekit-union"}[server.driver]
    if not (server.driver == "aufs" and mounts[0].type == "aufs"):  # a kernel with aufs
        assert mounts[0].type == expected_type
    with mounted(mounts, tmp_path / "b") as root:
        (root / "gone").unlink()
        (root / "dir/old").unlink()
        (root / "dir").rmdir()
        (root / "dir").mkdir()
        (root / "dir/new").write_text("y")
    client.commit("top", "b")
    for containerd in (True, False):  # as containerd mounts it, and with mount(8)
        with mounted(client.mounts("top"), tmp_path / "t", containerd=containerd) as root:
            assert not (root / "gone").exists()
            assert sorted(os.listdir(root / "dir")) == ["new"]
            assert readonly_for_real(root)
    options = dict(o.split("=", 1) for o in mounts[0].options if "=" in o)
    if server.driver == "overlay":
        upper = options["upperdir"]
        st = os.lstat(f"{upper}/gone")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlay's whiteout
    elif server.driver == "aufs" and mounts[0].type.startswith("fuse."):
        top = options["br"].split(":")[0].split("=")[0]
        assert os.path.exists(f"{top}/.wh.gone")  # aufs's whiteout
        assert os.path.exists(f"{top}/dir/.wh..wh..opq")
    client.remove("top")
    client.remove("base")


def test_commit_is_in_place(client, server, tmp_path):
    """Commit keeps the content where it is (no copy): the mounts name the same place."""
    mounts = client.prepare("k")
    with mounted(mounts, tmp_path / "m") as root:
        (root / "f").write_text("x")
    client.commit("n", "k")
    after = client.mounts("n")
    assert after[0].source == mounts[0].source
    assert after[0].type == mounts[0].type
    client.remove("n")


def test_remove_of_a_mounted_snapshot_is_refused(client, tmp_path):
    """Refused while containerd (here: mount(8)) has it mounted, nothing lost or leaked;
    removed once it is unmounted."""
    with mounted(client.prepare("base-k"), tmp_path / "b") as root:
        (root / "f").write_text("x")
        assert code_of(client.remove, "base-k") == grpc.StatusCode.FAILED_PRECONDITION
        assert (root / "f").read_text() == "x"
    client.commit("base", "base-k")
    with mounted(client.prepare("child", "base"), tmp_path / "c") as root:
        (root / "g").write_text("y")
        assert code_of(client.remove, "child") == grpc.StatusCode.FAILED_PRECONDITION
        assert (root / "g").read_text() == "y" and (root / "f").read_text() == "x"
    with mounted(client.view("view", "base"), tmp_path / "v") as root:
        assert code_of(client.remove, "view") == grpc.StatusCode.FAILED_PRECONDITION
        assert (root / "f").read_text() == "x"
    client.remove("view")
    client.remove("child")
    client.remove("base")
    assert client.list() == []


def test_remove_with_a_host_mount_whose_name_is_not_utf8(client, tmp_path):
    """The mount table is the host's: a mount point named with a byte that is not UTF-8
    (anybody's, anywhere) must not make Remove fail (it did: UNKNOWN, from a strict decode),
    and a snapshot mounted under such a name is still seen as mounted."""
    odd = os.fsdecode(bytes(tmp_path) + b"/odd\xff")
    os.mkdir(odd)
    subprocess.run(["mount", "-t", "tmpfs", "none", odd], check=True)
    try:
        client.prepare("k")
        client.remove("k")
        with mounted(client.prepare("m"), Path(odd) / "m") as root:
            (root / "f").write_text("x")
            assert code_of(client.remove, "m") == grpc.StatusCode.FAILED_PRECONDITION
        client.remove("m")
    finally:
        subprocess.run(["umount", odd], check=True)
    assert client.list() == []


def test_cleanup_keeps_every_snapshot(client, tmp_path):
    """Cleanup (containerd's garbage collector calls it after each pass, without a
    namespace) takes only what nobody owns: every snapshot, mounted or not, stays."""
    client.prepare("k")
    client.commit("base", "k")
    client.view("v", "base")
    before = client.list()
    with mounted(client.prepare("a", "base"), tmp_path / "a") as root:
        (root / "f").write_text("x")
        client.ns(None).cleanup()
        assert (root / "f").read_text() == "x"
    assert [i for i in client.list() if i.name != "a"] == before
    with mounted(client.mounts("a"), tmp_path / "a") as root:
        assert (root / "f").read_text() == "x"


def test_usage_is_the_snapshots_own(server, client, tmp_path):
    """Usage counts what the snapshot itself adds, its parents aside (vfs: its whole tree,
    which is a full copy of its parent's)."""
    with mounted(client.prepare("k"), tmp_path / "p") as root:
        (root / "big").write_bytes(b"p" * 200_000)
    client.commit("parent", "k")
    with mounted(client.prepare("child", "parent"), tmp_path / "c") as root:
        (root / "small").write_bytes(b"c" * 10_000)
        (root / "d").mkdir()
    parent_size, _ = client.usage("parent")
    size, inodes = client.usage("child")
    assert parent_size >= 200_000
    if server.driver == "vfs":
        assert size >= 210_000
    else:
        assert 10_000 <= size < 200_000
        assert 2 <= inodes < 10
    client.remove("child")
    client.remove("parent")


def test_a_child_sees_what_a_lazily_unmounted_parent_wrote(client, tmp_path):
    """containerd unmounts with MNT_DETACH and commits at once; a filesystem still held open
    (a copy of the mount in another mount namespace, an open file) has not written its data
    back yet. A child made from the committed snapshot sees it all the same."""
    target = tmp_path / "p"
    target.mkdir()
    m = client.prepare("k")[0]
    subprocess.run(_mount_argv(m, str(target), True), check=True, capture_output=True)
    held = open(target / "written-last", "w")  # keeps the filesystem alive past its unmount
    try:
        held.write("data\n")
        held.flush()
        (target / "dir").mkdir()
        (target / "dir/file").write_text("more\n")
        subprocess.run(["umount", "-l", str(target)], check=True, capture_output=True)
        client.commit("parent", "k")
        with mounted(client.prepare("child", "parent"), tmp_path / "c") as root:
            assert (root / "written-last").read_text() == "data\n"
            assert (root / "dir/file").read_text() == "more\n"
    finally:
        held.close()
    client.remove("child")
    client.remove("parent")
