"""`run --userns` on every driver: container root is an unprivileged host user taken from
/etc/subuid and /etc/subgid, the image's files still look root's inside, what the container
writes lands on disk owned by that range, and a device node the image ships (here a block
device node of a host loop device) cannot be opened: the rootfs is nodev in that mode."""

from __future__ import annotations

import os
import subprocess

import pytest
from imagecraft import busybox_with, one_line_error, sk
from subids import LINE, write

from storagekit import _native, idmap, registry
from storagekit.image import Images
from storagekit.runtime import Containers
from storagekit.store import Store

DRIVERS = sorted(registry.available())
MARKER = b"host-disk-secret"


@pytest.fixture
def loop_device(tmp_path):
    """A host loop device over a file that starts with MARKER."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(MARKER + bytes((1 << 20) - len(MARKER)))
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)



SCRIPT = """
id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map
stat -c %u:%g /bin/busybox /etc /etc/passwd /srv/byuid
stat -c %a /usr/bin/setuid
echo made > /root/made && mkdir /etc/newdir && echo wrote-etc
head -c 16 /disk && echo READ-DISK
echo x > /disk && echo WROTE-DISK
true
"""


def test_userns_maps_root_to_the_subordinate_range(store_root, busybox_tar, tmp_path,
                                                   loop_device, subordinate_ids):
    root = store_root
    first, count = subordinate_ids
    dev, backing = loop_device
    rdev = os.stat(dev).st_rdev
    tar = busybox_with(busybox_tar, tmp_path / "devimage.tar", [
        {"name": "disk", "type": "block", "mode": 0o666,
         "devmajor": os.major(rdev), "devminor": os.minor(rdev)},
        {"name": "usr/bin/setuid", "mode": 0o4755, "data": b"#!/bin/sh\n"},
        {"name": "srv/byuid", "uid": 33, "gid": 34},
        {"name": "srv/high", "uid": 70000, "gid": 70000}])
    assert sk(root, "image", "import", tar, "--name", "devimage").returncode == 0

    proc = sk(root, "run", "--userns", "--name", "kept", "devimage", "sh", "-c", SCRIPT,
              timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, (out, proc.stderr)
    lines = out.splitlines()
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", str(first), str(count)]  # uid_map
    assert lines[3].split() == ["0", str(first), str(count)]  # gid_map
    assert lines[4:8] == ["0:0"] * 3 + ["33:34"]  # the image's owners, inside
    assert lines[8] == "4755"  # set-id bits survive the shift
    assert "wrote-etc" in lines  # and container root may change them
    # The image's device node is not a way to the host's device.
    assert "READ-DISK" not in out and MARKER.decode() not in out, out
    assert "WROTE-DISK" not in out, out
    assert backing.read_bytes()[:len(MARKER)] == MARKER

    with Store(root) as store:
        c = Containers(store).get("kept")
        path = store.get(c.layer)
        try:
            for rel in ["root/made", "etc/newdir", "bin/busybox", "etc/passwd"]:
                st = os.lstat(os.path.join(path, rel))
                assert (st.st_uid, st.st_gid) == (first, first), rel
            st = os.lstat(os.path.join(path, "srv/byuid"))
            assert (st.st_uid, st.st_gid) == (first + 33, first + 34)
            st = os.lstat(os.path.join(path, "srv/high"))  # past the range: as it was
            assert (st.st_uid, st.st_gid) == (70000, 70000)
        finally:
            store.put(c.layer)
        top = Images(store).get("devimage").top_layer
        path = store.get(top)
        try:  # the image itself is unchanged: still root's on disk
            st = os.lstat(os.path.join(path, "bin/busybox"))
            assert (st.st_uid, st.st_gid) == (0, 0)
        finally:
            store.put(top)
    assert sk(root, "rm", "kept").returncode == 0

    # Other users of the range run as themselves; ids past it are refused.
    proc = sk(root, "run", "--rm", "--userns", "-u", "1000:1001", "devimage", "sh", "-c",
              "id -u; id -g; head -c 1 /disk || echo denied", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["1000", "1001", "denied"]
    line = one_line_error(sk(root, "run", "--rm", "--userns", "-u", str(count), "devimage",
                             "true"))
    assert f"outside the --userns range (0 to {count - 1})" in line
    # Without --userns the container is the host's root, as before.
    proc = sk(root, "run", "--rm", "devimage", "id", "-u", timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, b"0"), proc.stderr


@pytest.mark.parametrize("entry, says", [
    ("", "add a line such as 'storagekit:100000:65536' to /etc/subuid and /etc/subgid"),
    ("nobody:100000:65536\n", "add a line such as 'storagekit:100000:65536'"),
    ("storagekit:0:65536\n", "is not a range of unprivileged ids"),
    ("storagekit:100:65536\n", "is not a range of unprivileged ids"),
    ("storagekit:4294967000:65536\n", "is not a range of unprivileged ids"),
    ("storagekit:abc:1\n", "is not a range of unprivileged ids"),
])
def test_userns_needs_a_subordinate_range(tmp_path, busybox_tar, entry, says):
    root = tmp_path / "root"
    assert sk(root, "--driver", "vfs", "image", "import", busybox_tar, "--name",
              "busybox").returncode == 0
    write(idmap.SUBUID, entry)
    try:
        line = one_line_error(sk(root, "run", "--rm", "--userns", "busybox", "true"))
        assert says in line, line
    finally:
        write(idmap.SUBUID, LINE)
    with Store(root) as store:  # refused before anything was made
        assert Containers(store).list() == []
        assert not any(layer.id.startswith("ctr-") for layer in store.layers())


def test_root_entry_is_used_without_a_storagekit_one(tmp_path, busybox_tar):
    root = tmp_path / "root"
    assert sk(root, "--driver", "vfs", "image", "import", busybox_tar, "--name",
              "busybox").returncode == 0
    for path in (idmap.SUBUID, idmap.SUBGID):
        write(path, "root:1400000000:70000\n")
    try:
        proc = sk(root, "run", "--rm", "--userns", "busybox", "cat", "/proc/self/uid_map",
                  timeout=60)
    finally:
        for path in (idmap.SUBUID, idmap.SUBGID):
            write(path, LINE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [b"0", b"1400000000", b"70000"]


def test_userns_on_a_deeply_nested_image(tmp_path, busybox_tar):
    """The shift walks any depth a layer can hold (deeper than Python's recursion limit)."""
    root = tmp_path / "root"
    nested = [{"name": "/".join(["deep", *["d"] * depth]), "type": "dir"}
              for depth in range(1500)]
    tar = busybox_with(busybox_tar, tmp_path / "deep.tar", nested)
    try:
        assert sk(root, "--driver", "vfs", "image", "import", tar, "--name",
                  "deep").returncode == 0
        proc = sk(root, "run", "--rm", "--userns", "deep", "sh", "-c",
                  "cd /deep && find . -type d | wc -l", timeout=120)
        assert (proc.returncode, proc.stdout.strip()) == (0, b"1500"), proc.stderr
    finally:
        # pytest's own clean-up of old temporary directories (shutil.rmtree) recurses, and
        # would fail on this tree in every later run.
        _native.remove_tree(str(root))


def test_native_refuses_ranges_holding_host_root(tmp_path):
    for kw in [{"uid_map": (0, 65536), "gid_map": (100000, 65536)},
               {"uid_map": (100000, 0), "gid_map": (100000, 65536)},
               {"uid_map": (4294967000, 65536), "gid_map": (100000, 65536)},
               {"uid_map": (100000, 65536)}]:
        with pytest.raises(ValueError):
            _native.spawn_container(str(tmp_path), ["/bin/true"], [], user_namespace=True,
                                    **kw)
