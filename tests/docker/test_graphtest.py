"""What Docker expects of a graphdriver, after moby's daemon/graphdriver/graphtest
(DriverTestCreateEmpty, CreateBase, CreateSnap, DeepLayerRead, DiffApply, Changes, Echo,
SetQuota), checked through the plugin's socket by our own client, for every driver."""

from __future__ import annotations

import io
import os
import random
import secrets
import shutil
import stat
import tarfile

import pytest
from graphclient import PluginError

ADD, MODIFY, DELETE = 1, 0, 2


def new_id() -> str:
    return secrets.token_hex(32)  # as dockerd's stringid.GenerateRandomID


def content(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Layer:
    """Get on enter, Put on exit: the layer's root while it is mounted."""

    def __init__(self, client, lid: str) -> None:
        self.client, self.lid = client, lid

    def __enter__(self) -> str:
        self.root = self.client.get(self.lid)
        return self.root

    def __exit__(self, *exc) -> None:
        self.client.put(self.lid)


def entries(root: str) -> list[str]:
    return sorted(n for n in os.listdir(root) if n != "lost+found")  # ext4 has one


def write(path: str, data: bytes, mode: int = 0o755) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def add_many_files(client, lid: str, count: int, seed: int) -> None:
    with Layer(client, lid) as root:
        for i in range(count):
            write(f"{root}/directory-{i // 100 * 100}/file-{i}", content(64, seed + i))


def check_many_files(client, lid: str, count: int, seed: int) -> None:
    with Layer(client, lid) as root:
        for i in range(count):
            assert read(f"{root}/directory-{i // 100 * 100}/file-{i}") == content(64, seed + i)


def remove_layers(client, *lids: str) -> None:
    for lid in lids:
        client.remove(lid)
        assert not client.exists(lid)


def test_activate_and_capabilities(graph):
    assert graph.client.activate() == ["GraphDriver"]
    # False on every driver: see GraphDriverService.capabilities, and test_dockerd's
    # test_save_gives_back_the_loaded_layers for what dockerd does with it.
    assert graph.client.capabilities() == {"ReproducesExactDiffs": False}


def test_create_empty(graph):
    c = graph.client
    lid = new_id()
    c.create(lid)
    assert c.exists(lid)
    with Layer(c, lid) as root:
        st = os.stat(root)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert entries(root) == []
    remove_layers(c, lid)


def create_base(c, lid: str) -> None:
    c.create(lid, rw=True)
    old = os.umask(0)
    try:
        with Layer(c, lid) as root:
            os.mkdir(f"{root}/a subdir", 0o705 | stat.S_ISVTX)
            os.chown(f"{root}/a subdir", 1, 2)
            fd = os.open(f"{root}/a file", os.O_CREAT | os.O_WRONLY, 0o222 | stat.S_ISUID)
            os.write(fd, b"Some data")
            os.close(fd)
    finally:
        os.umask(old)


def verify_base(c, lid: str) -> None:
    with Layer(c, lid) as root:
        st = os.lstat(f"{root}/a subdir")
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o705 | stat.S_ISVTX
        assert (st.st_uid, st.st_gid) == (1, 2)
        st = os.lstat(f"{root}/a file")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o222 | stat.S_ISUID
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert read(f"{root}/a file") == b"Some data"
        assert entries(root) == ["a file", "a subdir"]


def test_create_base(graph):
    c = graph.client
    base = new_id()
    create_base(c, base)
    verify_base(c, base)
    remove_layers(c, base)


def test_create_snap(graph):
    c = graph.client
    base, snap, second = new_id(), new_id(), new_id()
    create_base(c, base)
    c.create(snap, base)
    verify_base(c, snap)
    with Layer(c, snap) as root:
        write(f"{root}/snap only", b"in the snapshot")
    c.create(second, snap)
    with Layer(c, second) as root:
        assert read(f"{root}/snap only") == b"in the snapshot"
    with Layer(c, base) as root:  # the snapshots changed nothing below them
        assert entries(root) == ["a file", "a subdir"]
    remove_layers(c, second, snap, base)


def test_deep_layer_read(graph):
    c = graph.client
    base = new_id()
    c.create(base)
    with Layer(c, base) as root:
        write(f"{root}/testfile.txt", b"test content")
    chain = [base]
    for i in range(1, 31):
        lid = new_id()
        c.create(lid, chain[-1])
        with Layer(c, lid) as root:
            write(f"{root}/top-id", lid.encode())
            write(f"{root}/layer-{i}/layer-id", lid.encode())
            write(f"{root}/layer-{i}/parent-id", chain[-1].encode())
        chain.append(lid)
    with Layer(c, chain[-1]) as root:
        assert read(f"{root}/top-id") == chain[-1].encode()
        expected = chain[-1].encode()
        for i in range(30, 0, -1):
            assert read(f"{root}/layer-{i}/layer-id") == expected
            expected = read(f"{root}/layer-{i}/parent-id")
        assert expected == base.encode()
        assert read(f"{root}/testfile.txt") == b"test content"
    remove_layers(c, *reversed(chain))


def test_diff_apply(graph):
    c = graph.client
    count = 300
    base, upper, diff = new_id(), new_id(), new_id()
    c.create(base)
    add_many_files(c, base, count, 3)
    with Layer(c, base) as root:
        write(f"{root}/file-remove.txt", b"This file should get removed in upper!")
        os.makedirs(f"{root}/var/lib")
    c.create(upper, base)
    add_many_files(c, upper, count, 6)
    with Layer(c, upper) as root:
        os.unlink(f"{root}/file-remove.txt")
        os.rmdir(f"{root}/var/lib")
    diff_size = c.diff_size(upper)

    c.create(diff, base)
    check_many_files(c, diff, count, 3)
    tar = c.diff(upper, base)
    assert c.apply_diff(diff, base, tar) == diff_size
    check_many_files(c, diff, count, 6)
    with Layer(c, diff) as root:
        assert not os.path.lexists(f"{root}/file-remove.txt")
        assert not os.path.lexists(f"{root}/var/lib")
        assert os.path.isdir(f"{root}/var")
    remove_layers(c, diff, upper, base)


def test_changes(graph):
    c = graph.client
    base, upper = new_id(), new_id()
    c.create(base)
    add_many_files(c, base, 20, 3)
    c.create(upper, base)
    expected = [("/directory-0", MODIFY)]
    with Layer(c, upper) as root:
        for j in range(20):
            if j % 3 == 0:  # updated
                write(f"{root}/directory-0/file-{j}", content(64, 6 + j))
                expected.append((f"/directory-0/file-{j}", MODIFY))
            elif j % 3 == 1:  # added
                write(f"{root}/directory-0/file-6-{j}", content(64, 6 + j))
                expected.append((f"/directory-0/file-6-{j}", ADD))
            else:  # removed
                os.unlink(f"{root}/directory-0/file-{j}")
                expected.append((f"/directory-0/file-{j}", DELETE))
    assert sorted(c.changes(upper, base)) == sorted(expected)
    remove_layers(c, upper, base)


def test_echo(graph):
    """Changes against no parent, against a parent with a deleted subtree, and against a
    parent where the child recreates it: the spots naive diffs get wrong."""
    c = graph.client
    depth_max = 4
    for depth in range(depth_max - 1):
        base, second, third = new_id(), new_id(), new_id()
        c.create(base)
        paths = []
        path = ""
        with Layer(c, base) as root:
            for i in range(depth_max - 1):
                path += f"/subdir{i + 1}"
                paths.append(path)
                os.mkdir(root + path, 0o700)
            paths.append(path + "/file")
            write(root + paths[-1], content(128, depth), 0o600)
        assert sorted(c.changes(base)) == sorted((p, ADD) for p in paths)

        c.create(second, base)
        with Layer(c, second) as root:
            shutil.rmtree(root + paths[depth])  # a directory and all below it
        expected = [(p, MODIFY) for p in paths[:depth]] + [(paths[depth], DELETE)]
        assert sorted(c.changes(second, base)) == sorted(expected)

        c.create(third, second)
        with Layer(c, third) as root:
            expected = [(p, MODIFY) for p in paths[:depth]]
            for p in paths[depth:-1]:
                os.mkdir(root + p, 0o700)
                expected.append((p, ADD))
            write(root + paths[-1], content(128, depth), 0o600)
            expected.append((paths[-1], ADD))
        assert sorted(c.changes(third, second)) == sorted(expected)
        remove_layers(c, third, second, base)


def test_set_quota_is_refused_in_one_line(graph):
    """No storagekit driver limits a layer's size (Docker's overlay2 does on xfs with pquota,
    devicemapper by growing the device): a size is an error, not silently ignored."""
    c = graph.client
    base = new_id()
    c.create(base)
    with pytest.raises(PluginError) as e:
        c.create(new_id(), base, rw=True, storage_opt={"size": "50M"})
    assert e.value.status == 400
    assert "size is not supported" in e.value.err and "\n" not in e.value.err
    remove_layers(c, base)


def test_diff_is_byte_stable_and_applies(graph):
    """Two Diffs of one layer are the same bytes, and a layer made from one has the same
    content; a Diff against no parent is the whole layer."""
    c = graph.client
    base, upper, copy = new_id(), new_id(), new_id()
    c.create(base)
    add_many_files(c, base, 10, 1)
    c.create(upper, base, rw=True)
    with Layer(c, upper) as root:
        write(f"{root}/directory-0/file-0", b"changed")
        os.symlink("directory-0/file-1", f"{root}/link")
    first, second = c.diff(upper, base), c.diff(upper, base)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = set(tar.getnames())
    assert {"directory-0/file-0", "link"} <= names and "directory-0/file-2" not in names
    with tarfile.open(fileobj=io.BytesIO(c.diff(upper))) as tar:
        assert "directory-0/file-2" in tar.getnames()  # everything: no parent
    c.create(copy, base)
    c.apply_diff(copy, base, first)
    assert sorted(c.changes(copy, base)) == sorted(c.changes(upper, base))
    remove_layers(c, copy, upper, base)


def test_metadata_and_status(graph):
    c = graph.client
    lid = new_id()
    c.create(lid)
    meta = c.metadata(lid)
    assert meta and all(isinstance(v, str) for v in meta.values())
    status = dict(c.status())
    assert status["Driver"] == graph.driver
    assert status["Store"] == str(graph.store)
    assert int(status["Store layers"]) >= 1
    remove_layers(c, lid)
