"""The btrfs driver beyond the contract: subvolumes and snapshots, the ro property, the
loopback on a non-btrfs home, quotas, and changes from generation numbers."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
import time

import pytest
from treeutil import make_tar

from storagekit import _native
from storagekit.driver import CreateOpts, Driver
from storagekit.drivers.btrfs import BtrfsDriver, ioctl
from storagekit.errors import InvalidArgument
from storagekit.hostinfo import backing_fs

MIB = 1 << 20


def loops_over(path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[0] for line in out.splitlines() if str(path) in line]


def detached(image) -> bool:
    """Are the loop devices over image gone? The kernel detaches an autoclear device once
    its last opener lets go, which can be a moment after the unmount returns."""
    deadline = time.monotonic() + 10
    while loops_over(image) and time.monotonic() < deadline:
        time.sleep(0.05)
    return loops_over(image) == []


def prop_ro(path: str) -> bool:
    """The ro property as btrfs-progs reads it (not through the driver's own ioctl)."""
    out = subprocess.run(["btrfs", "property", "get", "-ts", path, "ro"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return out == "ro=true"


def data_used(path: str) -> int:
    os.sync()
    subprocess.run(["btrfs", "filesystem", "sync", path], check=True, capture_output=True)
    return {kind: used for kind, _, used in ioctl.space_info(path)}["Data"]


@pytest.fixture
def loopback(tmp_path):
    assert backing_fs(tmp_path) != "btrfs"
    d = BtrfsDriver(tmp_path / "btrfs", {"btrfs.loopback": "1G"})
    yield d
    d.cleanup()


# ------------------------------------------------------------------ where the subvolumes live


def test_loopback_made_on_a_non_btrfs_home_and_cleanup_leaves_no_loop(tmp_path):
    home = tmp_path / "btrfs"
    d = BtrfsDriver(home, {"btrfs.loopback": "600M"})
    image = home / "btrfs.img"
    assert image.stat().st_size == 600 * MIB
    assert image.stat().st_blocks * 512 < 100 * MIB  # sparse
    assert backing_fs(d.volume.root) == "btrfs"
    assert len(loops_over(image)) == 1
    assert d.on_disk_options() == {"btrfs.direct": "false"}
    status = dict(d.status())
    assert status["Loopback File"] == str(image)
    assert "Data Space Total" in status and "Metadata Space Used" in status
    d.create("a")
    d.cleanup()
    assert detached(image)
    assert not _native.is_mountpoint(str(home / "fs"))
    # the same driver goes on (a Docker plugin after dockerd's Cleanup): mounted again
    assert d.exists("a")
    d.create("b", "a")
    d.cleanup()
    assert detached(image)
    # and the next open brings it back, layers and all
    d = BtrfsDriver(home)
    try:
        assert d.exists("a") and prop_ro(d.path("a")) and d.parent("b") == "a"
    finally:
        d.cleanup()
    assert detached(image)


def test_loopback_grows_online(tmp_path):
    home = tmp_path / "btrfs"
    d = BtrfsDriver(home, {"btrfs.loopback": "512M"})
    d.create_rw("keep")
    with open(os.path.join(d.get("keep"), "f"), "wb") as f:
        f.write(b"kept")
    small = os.statvfs(d.volume.root).f_blocks * os.statvfs(d.volume.root).f_frsize
    bigger = BtrfsDriver(home, {"btrfs.loopback": "2G"})  # while the first is open
    try:
        st = os.statvfs(bigger.volume.root)
        assert (home / "btrfs.img").stat().st_size == 2 << 30
        assert st.f_blocks * st.f_frsize > small + (1 << 30)
        with open(os.path.join(bigger.path("keep"), "f"), "rb") as f:
            assert f.read() == b"kept"
    finally:
        d.put("keep")
        bigger.cleanup()
    assert detached(home / "btrfs.img")


def test_a_grow_cut_short_is_finished_at_the_next_open(tmp_path):
    home = tmp_path / "btrfs"
    d = BtrfsDriver(home, {"btrfs.loopback": "512M"})
    d.cleanup()
    # a crash after the file grew and before the filesystem did
    (home / ".growing").write_text("")
    os.truncate(home / "btrfs.img", 1 << 30)
    d = BtrfsDriver(home)
    try:
        st = os.statvfs(d.volume.root)
        assert st.f_blocks * st.f_frsize > 768 * MIB
        assert not (home / ".growing").exists()
    finally:
        d.cleanup()
    assert detached(home / "btrfs.img")


def test_a_stale_loop_device_is_detached_before_the_loopback_is_mounted(tmp_path):
    home = tmp_path / "btrfs"
    d = BtrfsDriver(home, {"btrfs.loopback": "512M"})
    d.create("a")
    d.cleanup()
    image = home / "btrfs.img"
    # what a process killed between attaching and mounting leaves
    stale = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                           capture_output=True, text=True).stdout.strip()
    try:
        d = BtrfsDriver(home)
        try:
            # one device only (the kernel may hand out the stale one's number again): the
            # one mounted
            loops = loops_over(image)
            assert loops == [d.volume.device()]
            assert d.exists("a")
        finally:
            d.cleanup()
        assert detached(image)
    finally:
        subprocess.run(["losetup", "-d", stale], capture_output=True)


def test_a_home_on_btrfs_is_used_directly(btrfs_dir):
    d = BtrfsDriver(btrfs_dir / "btrfs")
    try:
        assert d.on_disk_options() == {"btrfs.direct": "true"}
        assert not (btrfs_dir / "btrfs" / "btrfs.img").exists()
        d.create("a")
        assert os.stat(d.path("a")).st_ino == ioctl.FIRST_FREE_OBJECTID  # a subvolume root
        assert d.path("a").startswith(str(btrfs_dir))
    finally:
        d.cleanup()


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(InvalidArgument, match="btrfs.loopback"):
        BtrfsDriver(tmp_path / "a", {"btrfs.loopback": "lots"})
    with pytest.raises(InvalidArgument, match="at least 256M"):
        BtrfsDriver(tmp_path / "b", {"btrfs.loopback": "1M"})
    with pytest.raises(InvalidArgument, match="is not on btrfs"):
        BtrfsDriver(tmp_path / "c", {"btrfs.direct": "true"})
    assert detached(tmp_path)


def test_a_loopback_can_be_asked_for_on_a_btrfs_home(btrfs_dir):
    d = BtrfsDriver(btrfs_dir / "btrfs", {"btrfs.direct": "false", "btrfs.loopback": "256M"})
    try:
        assert d.volume.loop and (btrfs_dir / "btrfs" / "btrfs.img").exists()
        assert d.on_disk_options() == {"btrfs.direct": "false"}
    finally:
        d.cleanup()
    assert detached(btrfs_dir)


# ------------------------------------------------------------------ snapshots and the ro property


def test_a_child_of_a_200mb_parent_copies_no_data(btrfs_dir):
    d = BtrfsDriver(btrfs_dir / "btrfs")
    try:
        d.create_rw("big")
        with open(os.path.join(d.get("big"), "blob"), "wb") as f:
            for _ in range(200):
                f.write(os.urandom(MIB))
        d.put("big")
        d.commit("big")
        before = data_used(str(btrfs_dir))
        assert before >= 200 * MIB
        d.create_rw("child", "big")
        d.create("view", "big")
        after = data_used(str(btrfs_dir))
        assert after - before < MIB  # metadata only: no extent was copied
        info = ioctl.subvolume_info(d.path("child"))
        assert info.parent_uuid == ioctl.subvolume_info(d.path("big")).uuid  # a snapshot
        # a first write copies only what it touches
        with open(os.path.join(d.get("child"), "blob"), "r+b") as f:
            f.write(b"x" * 4096)
        d.put("child")
        assert data_used(str(btrfs_dir)) - before < 2 * MIB
    finally:
        d.cleanup()


def test_ro_property_follows_the_layer_kind(loopback):
    d = loopback
    d.create("image")
    d.create_rw("container", "image")
    assert prop_ro(d.path("image")) and not prop_ro(d.path("container"))
    path = d.get("image")
    with pytest.raises(OSError) as e:
        open(os.path.join(path, "x"), "w")
    assert e.value.errno == errno.EROFS
    d.put("image")
    # apply_diff writes into a read-only layer, which is read-only again afterwards
    d.apply_diff("image", None, io.BytesIO(make_tar([{"name": "f", "data": b"f"}])))
    assert prop_ro(d.path("image"))
    assert os.path.exists(os.path.join(d.path("image"), "f"))
    d.commit("container")
    assert prop_ro(d.path("container")) and d.is_readonly("container")
    assert d.metadata("container")["ReadOnlyProperty"] == "true"
    assert [m.options for m in d.mounts("container")] == [["rbind", "ro"]]


def test_remove_deletes_nested_subvolumes_too(loopback):
    d = loopback
    d.create_rw("c")
    path = d.get("c")
    ioctl.create_subvolume(os.path.join(path, "inner"))  # what a container may make
    os.mkdir(os.path.join(path, "deep"))
    ioctl.create_subvolume(os.path.join(path, "deep", "inner2"))
    d.put("c")
    d.remove("c")
    assert not d.exists("c")
    listing = subprocess.run(["btrfs", "subvolume", "list", d.volume.root], check=True,
                             capture_output=True, text=True).stdout
    assert listing.strip() == ""


def test_collect_removes_a_half_made_subvolume(loopback):
    d = loopback
    ioctl.create_subvolume(d._sub_prefix + ".partial-gone")
    ioctl.set_readonly(d._sub_prefix + ".partial-gone", True)
    gone = d.collect(set())
    assert any(g.endswith(".partial-gone") for g in gone)
    assert not os.path.exists(d._sub_prefix + ".partial-gone")


# ------------------------------------------------------------------ quotas


def test_size_through_a_quota_group(loopback):
    d = loopback
    d.create_rw("small", None, CreateOpts(storage_opt={"size": "8M"}))
    assert ioctl.quota_enabled(d.volume.root)
    assert d.metadata("small")["Size"] == str(8 * MIB)
    path = d.get("small")
    with pytest.raises(OSError) as e, open(os.path.join(path, "fill"), "wb") as f:
        for _ in range(32):
            f.write(os.urandom(MIB))
            f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == errno.EDQUOT
    d.put("small")
    sub_id = ioctl.subvolume_info(d.path("small")).id
    d.remove("small")
    listing = subprocess.run(["btrfs", "subvolume", "list", "-d", d.volume.root],
                             capture_output=True, text=True).stdout
    assert f"ID {sub_id} " not in listing or "DELETED" in listing


def test_min_space_and_unknown_storage_options(tmp_path):
    d = BtrfsDriver(tmp_path / "btrfs", {"btrfs.loopback": "512M", "btrfs.min_space": "16M"})
    try:
        with pytest.raises(InvalidArgument, match="cannot be less than 16M"):
            d.create_rw("a", None, CreateOpts(storage_opt={"size": "8M"}))
        with pytest.raises(InvalidArgument, match="unknown storage option 'inodes'"):
            d.create_rw("a", None, CreateOpts(storage_opt={"inodes": "5"}))
        assert not d.exists("a") and os.listdir(d._sub_prefix) == []
        d.create_rw("a", None, CreateOpts(storage_opt={"size": "32M"}))
    finally:
        d.cleanup()


# ------------------------------------------------------------------ changes from generations


def edit_a_lot(root: str) -> None:
    """Every kind of edit, in a tree whose most part stays untouched."""
    j = os.path.join
    with open(j(root, "etc/conf"), "w") as f:
        f.write("changed")
    os.unlink(j(root, "etc/gone"))
    os.rename(j(root, "etc/moved"), j(root, "srv/moved"))  # across directories
    os.link(j(root, "usr/lib/lib0"), j(root, "srv/hardlink"))  # a new name of an old file
    os.chmod(j(root, "usr/share"), 0o700)  # a directory's own metadata
    os.setxattr(j(root, "usr/lib/lib3"), "user.k", b"v")
    os.unlink(j(root, "usr/lib/lib4"))
    os.mkdir(j(root, "usr/lib/lib4"))  # a file becomes a directory
    with open(j(root, "usr/lib/lib4/in"), "w") as f:
        f.write("in")
    subprocess.run(["rm", "-rf", j(root, "var/tree/d1")], check=True)
    with open(j(root, "var/tree/d1"), "w") as f:  # a directory becomes a file
        f.write("file now")
    os.makedirs(j(root, "new/deep/er"))
    os.symlink("../etc", j(root, "new/link"))
    os.utime(j(root, "var/tree/d2/f0"), ns=(0, 123))  # only the times change
    with open(j(root, "var/tree/d3/f1"), "r+b") as f:  # same size, new content
        f.write(b"Z")
    os.utime(j(root, "var/tree/d3/f1"), ns=(1, 1000_000_000 * 5))
    with open(j(root, "deep/a/b/c/leaf"), "a") as f:  # under directories none of it touches
        f.write("more")


def base_entries() -> list[dict]:
    out = [{"name": n, "type": "dir"} for n in
           ("etc", "srv", "usr", "usr/lib", "usr/share", "var", "var/tree", "deep", "deep/a",
            "deep/a/b", "deep/a/b/c")]
    out.append({"name": "deep/a/b/c/leaf", "data": b"leaf"})
    out += [{"name": "etc/conf", "data": b"conf"}, {"name": "etc/gone", "data": b"g"},
            {"name": "etc/moved", "data": b"m"}]
    out += [{"name": f"usr/lib/lib{i}", "data": b"l" * i} for i in range(8)]
    out += [{"name": f"usr/share/s{i}", "data": b"s"} for i in range(50)]
    for d in range(6):
        out.append({"name": f"var/tree/d{d}", "type": "dir"})
        out += [{"name": f"var/tree/d{d}/f{i}", "data": b"abc"} for i in range(20)]
    return out


def naive_export(d: BtrfsDriver, layer: str, parent: str) -> bytes:
    r, w = os.pipe()
    out = bytearray()
    import threading

    def read():
        while chunk := os.read(r, 1 << 16):
            out.extend(chunk)

    t = threading.Thread(target=read)
    t.start()
    try:
        Driver.export_diff(d, layer, parent, w)  # the base class's: both trees compared
    finally:
        os.close(w)
        t.join()
        os.close(r)
    return bytes(out)


def test_changes_from_generations_equal_the_tree_comparison(loopback):
    d = loopback
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(make_tar(base_entries())))
    d.create_rw("child", "base")
    with_edits = d.get("child")
    edit_a_lot(with_edits)
    d.put("child")
    fast = d._fast_changes("child", "base")
    assert fast is not None  # the generation path, not the fallback
    with d._mounted("child") as c, d._mounted("base") as b:
        assert fast == _native.changes(c, b)
    assert [(c.path, int(c.kind)) for c in d.changes("child", "base")] == fast
    assert not any(p.startswith("/var/tree/d0") for p, _ in fast)  # untouched subtrees
    assert ("/srv/hardlink", _native.CHANGE_ADD) in fast
    assert ("/usr/share", _native.CHANGE_MODIFY) in fast
    assert ("/deep/a/b/c/leaf", _native.CHANGE_MODIFY) in fast
    # the export is the same bytes as the naive one, before and after the commit
    assert d.diff("child", "base").read() == naive_export(d, "child", "base")
    d.commit("child")
    assert d.diff("child", "base").read() == naive_export(d, "child", "base")
    assert d.diff_size("child", "base") == Driver.diff_size(d, "child", "base")
    # a grandchild with no change has none, and a new child of the same parent too
    d.create("grand", "child")
    assert d.changes("grand", "child") == []
    d.create_rw("sibling", "base")
    assert d.changes("sibling", "base") == []


def test_a_parent_written_after_the_snapshot_falls_back_to_the_naive_diff(loopback):
    d = loopback
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(make_tar(base_entries())))
    d.create("child", "base")
    d.apply_diff("child", "base", io.BytesIO(make_tar([{"name": "etc/new", "data": b"n"}])))
    # the parent changes after its child was made from it
    d.apply_diff("base", None, io.BytesIO(make_tar([{"name": "etc/late", "data": b"l"}])))
    assert d._fast_changes("child", "base") is None
    changes = {(c.path, int(c.kind)) for c in d.changes("child", "base")}
    assert ("/etc/late", _native.CHANGE_DELETE) in changes
    assert ("/etc/new", _native.CHANGE_ADD) in changes


def test_prune_unmounts_an_idle_loopback_but_not_one_in_use(tmp_path):
    home = tmp_path / "btrfs"
    d = BtrfsDriver(home, {"btrfs.loopback": "512M"})
    d.create("a")
    other = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from storagekit.drivers.btrfs import BtrfsDriver
        BtrfsDriver({str(home)!r})
        print("open", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "open\n"
        assert d.collect({"a"}) == []  # another process has it open
        assert d.volume.mounted()
    finally:
        other.communicate("")
    gone = d.collect({"a"})
    assert gone == [f"idle loopback mount {d.volume.root}"]
    assert not d.volume.mounted() and detached(home / "btrfs.img")
    d = BtrfsDriver(home)  # the next open mounts it again
    try:
        d.get("a")
        assert d.collect({"a"}) == []  # a layer is got
        d.put("a")
    finally:
        d.cleanup()
