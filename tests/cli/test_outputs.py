"""`layer diff -o FILE` and `image export -o FILE` write their output atomically: on success
FILE is replaced whole; an export that fails midway leaves no FILE, no temporary file, and an
existing FILE (or a file of the user's named like a temporary one) untouched. A FIFO or a
device named as FILE is written to as a stream, never replaced by a regular file."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile

import pytest
from clirun import js, one_line_error, sk
from treeutil import make_tar

BIG = make_tar([{"name": "blob", "data": os.urandom(1 << 20)}])  # 4x the small_fs


@pytest.fixture
def big(tmp_path):
    """A store with an image "big" of one 1 MiB layer: (root, the layer's id)."""
    root = tmp_path / "root"
    tar = tmp_path / "big.tar"
    tar.write_bytes(BIG)
    sk(root, "--driver", "vfs", "image", "import", tar, "--name", "big")
    (image,) = js(root, "image", "ls")
    return root, image["top_layer"]


def _export(kind: str, root, layer: str, target) -> subprocess.CompletedProcess[bytes]:
    if kind == "layer diff":
        return sk(root, "layer", "diff", layer, "-o", target, check=False)
    return sk(root, "image", "export", "big", "-o", target, check=False)


KINDS = ["layer diff", "image export"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_export_leaves_nothing(big, small_fs, kind):
    root, layer = big
    err = one_line_error(_export(kind, root, layer, small_fs / "out.tar"))
    assert "No space left on device" in err
    assert os.listdir(small_fs) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_export_leaves_the_old_file(big, small_fs, kind):
    root, layer = big
    (small_fs / "out.tar").write_bytes(b"the previous export")
    (small_fs / "out.tar.partial").write_bytes(b"a file of the user's")
    one_line_error(_export(kind, root, layer, small_fs / "out.tar"))
    assert sorted(os.listdir(small_fs)) == ["out.tar", "out.tar.partial"]
    assert (small_fs / "out.tar").read_bytes() == b"the previous export"
    assert (small_fs / "out.tar.partial").read_bytes() == b"a file of the user's"


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_replaces_the_old_file_whole(big, tmp_path, kind):
    root, layer = big
    out = tmp_path / "out" / "out.tar"
    out.parent.mkdir()
    out.write_bytes(b"x" * (4 << 20))  # longer than the export: nothing of it may remain
    assert _export(kind, root, layer, out).returncode == 0
    assert os.listdir(out.parent) == ["out.tar"]
    names = tarfile.open(out).getnames()
    assert ("blob" in names) if kind == "layer diff" else ("index.json" in names)
    if kind == "layer diff":
        assert out.read_bytes() == sk(root, "layer", "diff", layer).stdout


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_into_a_fifo_streams_into_it(big, tmp_path, kind):
    root, layer = big
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "pipe"
    os.mkfifo(fifo)
    got = tmp_path / "got.tar"
    with open(got, "wb") as sink:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=sink)
    try:
        proc = _export(kind, root, layer, fifo)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a file"
        assert reader.wait() == 0
    finally:
        reader.kill()
        reader.wait()
    assert os.listdir(out) == ["pipe"]
    names = tarfile.open(got).getnames()
    assert ("blob" in names) if kind == "layer diff" else ("index.json" in names)
    if kind == "layer diff":
        assert got.read_bytes() == sk(root, "layer", "diff", layer).stdout


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_to_dev_null_leaves_the_device(big, kind):
    root, layer = big
    before = os.stat("/dev/null")
    proc = _export(kind, root, layer, "/dev/null")
    assert proc.returncode == 0, proc.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode), "/dev/null was replaced by a regular file"
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_through_a_symlink_replaces_its_target(big, tmp_path, kind):
    root, layer = big
    target = tmp_path / "real.tar"
    target.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    assert _export(kind, root, layer, link).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert tarfile.open(target).getnames()


def test_an_export_to_a_directory_or_socket_is_refused(big, tmp_path):
    import socket

    root, layer = big
    directory = tmp_path / "adir"
    directory.mkdir()
    assert "is a directory" in one_line_error(_export("layer diff", root, layer, directory))
    assert os.listdir(directory) == []
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        for k in KINDS:
            assert "is a socket" in one_line_error(_export(k, root, layer, tmp_path / "sock"))
    assert stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)
