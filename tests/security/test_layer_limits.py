"""Sparse and compression bombs: a few KB of tar can declare a TiB of file data. The store's
max-layer-size option (default storagekit.store.DEFAULT_MAX_LAYER_SIZE) refuses such a layer
in one line on every driver, leaving nothing; a user raises (or lowers) it with
`-o max-layer-size=SIZE`. And file names that are not UTF-8 apply and come back out of an
image export byte for byte on every driver."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile

import pytest
from cliutil import command

from storagekit import registry
from storagekit.store import DEFAULT_MAX_LAYER_SIZE

DRIVERS = sorted(registry.available())


@pytest.fixture(params=DRIVERS)
def driver(request, tmp_path):
    ok, reason = registry.driver_class(request.param).probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    yield request.param
    root = tmp_path / "root"
    if root.exists():
        sk(root, "prune")


def sk(root, *args, check: bool = False):
    proc = subprocess.run([command(), "--root", str(root), *map(str, args)],
                          capture_output=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stderr.decode()
    return proc


def one_line(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "internal error" not in err, err
    return err


def sparse_bomb(tmp_path) -> bytes:
    """GNU tar's own sparse encoding of a 1 TiB file (a few KB)."""
    src = tmp_path / "bomb"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.truncate(1 << 40)
    out = subprocess.run(["tar", "-S", "--format=pax", "-cf", "-", "-C", str(src), "huge"],
                         capture_output=True, check=True).stdout
    (src / "huge").unlink()
    assert len(out) < 16 << 10
    return out


def test_a_sparse_bomb_is_refused(driver, tmp_path):
    bomb = tmp_path / "bomb.tar"
    bomb.write_bytes(sparse_bomb(tmp_path))
    root = tmp_path / "root"
    err = one_line(sk(root, "--driver", driver, "image", "import", bomb, "--name", "bomb"))
    assert f"more than {DEFAULT_MAX_LAYER_SIZE} bytes" in err and "max-layer-size" in err
    assert json.loads(sk(root, "--json", "layer", "ls").stdout) == []


def test_the_limit_is_the_users(tmp_path):
    root = tmp_path / "root"
    bomb = tmp_path / "bomb.tar"
    bomb.write_bytes(sparse_bomb(tmp_path))
    sk(root, "--driver", "vfs", "-o", "max-layer-size=2T", "image", "import", bomb,
       "--name", "bomb", check=True)
    # a compressed layer: 4 MiB of zeros in a few KB of gzip, against a 1M limit
    zeros = io.BytesIO()
    with tarfile.open(fileobj=zeros, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 4 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    small = tmp_path / "zeros.tar.gz"
    small.write_bytes(gzip.compress(zeros.getvalue()))
    err = one_line(sk(root, "-o", "max-layer-size=1M", "image", "import", small,
                      "--name", "zeros"))
    assert "more than 1048576 bytes" in err
    sk(root, "-o", "max-layer-size=8M", "image", "import", small, "--name", "zeros", check=True)
    assert "is not a size" in one_line(sk(root, "-o", "max-layer-size=lots", "image", "ls"))


def test_non_utf8_names_round_trip(driver, tmp_path):
    src = os.fsencode(tmp_path / "tree")
    os.makedirs(src + b"/dir\xff")
    with open(src + b"/dir\xff/caf\xe9", "wb") as f:
        f.write(b"latin-1 name\n")
    os.symlink(b"caf\xe9", src + b"/dir\xff/link\xfe")
    layer = subprocess.run(["tar", "--format=pax", "-cf", "-", "-C", src, "."],
                           capture_output=True, check=True).stdout
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(layer)
    root = tmp_path / "root"
    sk(root, "--driver", driver, "image", "import", tar, "--name", "names", check=True)
    out = tmp_path / "out.tar"
    sk(root, "image", "export", "names", "-o", out, check=True)
    with tarfile.open(out) as image:
        index = json.load(image.extractfile("index.json"))
        manifest = json.load(image.extractfile(
            "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        blob = image.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"][7:]).read()
    with tarfile.open(fileobj=io.BytesIO(blob), encoding="utf-8",
                      errors="surrogateescape") as exported:
        names = {os.fsencode(m.name.removeprefix("./")): m for m in exported}
    assert {b"dir\xff", b"dir\xff/caf\xe9", b"dir\xff/link\xfe"} <= set(names)
    assert os.fsencode(names[b"dir\xff/link\xfe"].linkname) == b"caf\xe9"
    sk(root, "image", "rm", "names", check=True)
