"""Malformed images and hostile run configs, through the command users run: each ends in one
line (exit 1, never `internal error`), under a 1 GiB address-space limit (a blow-up fails the
command instead of the machine) and a time-out that only a hang reaches; nothing is left in
the store. A directory image and the same image as a tar archive are both tried."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import subprocess
import tarfile

import pytest
from cliutil import command
from treeutil import make_tar

from storagekit import oci

LAYER = make_tar([{"name": "f", "data": b"x"}])
RUN = ["/bin/true"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def sk(root, *args):
    return subprocess.run([command(), "--root", str(root), *map(str, args)],
                          capture_output=True, timeout=120, preexec_fn=_limited)


def one_line(proc) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "internal error" not in err, err
    return err


def write_oci(d, layers=(LAYER,), config=None, manifest=None, index=None, mutate=None):
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(x: bytes) -> str:
        (blobs / sha(x)[7:]).write_bytes(x)
        return sha(x)

    descs = [{"mediaType": oci.OCI_LAYER, "digest": put(x), "size": len(x)} for x in layers]
    if config is None:
        config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": RUN},
                  "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}
    cb = config if isinstance(config, bytes) else json.dumps(config).encode()
    if manifest is None:
        manifest = {"schemaVersion": 2, "config": {"mediaType": oci.OCI_CONFIG,
                                                   "digest": put(cb), "size": len(cb)},
                    "layers": descs}
    mb = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    if index is None:
        index = {"schemaVersion": 2, "manifests": [
            {"mediaType": oci.OCI_MANIFEST, "digest": put(mb), "size": len(mb),
             "annotations": {oci.REF_NAME: "t:1"}}]}
    (d / "index.json").write_bytes(index if isinstance(index, bytes) else
                                   json.dumps(index).encode())
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if mutate:
        mutate(d, blobs)


def write_save(d, manifest=None, mutate=None):
    d.mkdir()
    (d / "l0").mkdir()
    (d / "l0" / "layer.tar").write_bytes(LAYER)
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]}}
    (d / "c.json").write_text(json.dumps(cfg))
    if manifest is None:
        manifest = [{"Config": "c.json", "RepoTags": ["s:1"], "Layers": ["l0/layer.tar"]}]
    (d / "manifest.json").write_text(json.dumps(manifest))
    if mutate:
        mutate(d)


def _swap_layer(d, blobs):
    (blobs / sha(LAYER)[7:]).write_bytes(make_tar([{"name": "g", "data": b"y"}]))


def _dir_blob(d, blobs):
    (blobs / sha(LAYER)[7:]).unlink()
    (blobs / sha(LAYER)[7:]).mkdir()


def _huge_index(d, blobs):
    (d / "index.json").write_bytes(b'{"manifests": [' + b'{"a": 1},' * 2_000_000 + b"{}]}")


def _fifo_config(d):
    (d / "c.json").unlink()
    os.mkfifo(d / "c.json")


def _config_out(d):
    (d / "c.json").unlink()
    (d / "c.json").symlink_to("/etc/passwd")


X = sha(b"x")
MALFORMED = {
    "bad-json": lambda d: write_oci(d, index=b"{not json"),
    "index-is-a-list": lambda d: write_oci(d, index=[1, 2]),
    "manifests-wrong-type": lambda d: write_oci(d, index={"manifests": "x"}),
    "layer-descriptor-wrong-type": lambda d: write_oci(
        d, manifest={"config": {"digest": X}, "layers": [1]}),
    "missing-layer": lambda d: write_oci(
        d, mutate=lambda d, b: (b / sha(LAYER)[7:]).unlink()),
    "layer-digest-mismatch": lambda d: write_oci(d, mutate=_swap_layer),
    "config-not-an-object": lambda d: write_oci(d, config=b"[1, 2, 3]"),
    "diff-ids-wrong-type": lambda d: write_oci(d, config={"rootfs": {"diff_ids": [5]}}),
    "rootfs-wrong-type": lambda d: write_oci(d, config={"rootfs": "layers"}),
    "huge-index": lambda d: write_oci(d, mutate=_huge_index),
    "absurd-size": lambda d: write_oci(
        d, manifest={"config": {"digest": X, "size": 10 ** 30}, "layers": []}),
    "negative-size": lambda d: write_oci(
        d, manifest={"config": {"digest": X, "size": -1}, "layers": []}),
    "absurd-layer-count": lambda d: write_oci(
        d, manifest={"config": {"digest": X}, "layers": [{"digest": X}] * 5000}),
    "layer-blob-is-a-directory": lambda d: write_oci(d, mutate=_dir_blob),
    "annotations-wrong-type": lambda d: write_oci(
        d, index={"manifests": [{"digest": X, "annotations": "x", "platform": "y"}]}),
    "digest-traversal": lambda d: write_oci(
        d, index={"manifests": [{"digest": "sha256:../../../etc/passwd"}]}),
    "docker-config-is-a-fifo": lambda d: write_save(d, mutate=_fifo_config),
    "docker-config-links-out": lambda d: write_save(d, mutate=_config_out),
    "docker-entry-wrong-type": lambda d: write_save(d, manifest=["x"]),
    "docker-layers-wrong-type": lambda d: write_save(
        d, manifest=[{"Config": "c.json", "Layers": [1]}]),
    "docker-config-traversal": lambda d: write_save(
        d, manifest=[{"Config": "../../../etc/passwd", "Layers": []}]),
}

HOSTILE_RUN = {
    "entrypoint-a-string": {"Entrypoint": "/bin/true"},
    "cmd-an-object": {"Cmd": {"a": 1}},
    "env-a-string": {"Env": "A=1", "Cmd": RUN},
    "env-of-numbers": {"Env": [1, 2], "Cmd": RUN},
    "env-without-equals": {"Env": ["JUSTNAME"], "Cmd": RUN},
    "user-a-number": {"User": 0, "Cmd": RUN},
    "user-id-too-large": {"User": "4294967295", "Cmd": RUN},
    "workdir-a-list": {"WorkingDir": ["/"], "Cmd": RUN},
    "workdir-relative": {"WorkingDir": "../../..", "Cmd": RUN},
    "hostname-a-number": {"Hostname": 5, "Cmd": RUN},
    "cmd-with-nul": {"Cmd": ["/bin/tr\0ue"]},
    "config-a-list": [1],
}


def _archive(d, as_tar: bool, tmp_path):
    if not as_tar:
        return d
    out = tmp_path / "image.tar"
    with tarfile.open(out, "w") as tar:
        for name in sorted(os.listdir(d)):
            tar.add(d / name, arcname=name)
    return out


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_image(tmp_path, case, as_tar):
    d = tmp_path / "image"
    MALFORMED[case](d)
    root = tmp_path / "root"
    err = one_line(sk(root, "--driver", "vfs", "image", "import", _archive(d, as_tar, tmp_path)))
    assert "invalid image" in err
    assert json.loads(sk(root, "--json", "layer", "ls").stdout) == []


@pytest.mark.parametrize("case", sorted(HOSTILE_RUN))
def test_hostile_run_config(tmp_path, busybox_tar, case):
    layer = busybox_tar.read_bytes()
    runtime = HOSTILE_RUN[case]
    config = {"architecture": "amd64", "os": "linux", "config": runtime,
              "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    d = tmp_path / "image"
    write_oci(d, layers=(layer,), config=config)
    root = tmp_path / "root"
    proc = sk(root, "--driver", "vfs", "image", "import", d, "--name", "hostile")
    if proc.returncode == 0:  # refused when it runs, then
        proc = sk(root, "run", "--rm", "hostile")
    err = one_line(proc)
    assert "config" in err or "image" in err, err


def test_a_tar_of_very_many_members_is_a_root_filesystem(tmp_path):
    """A rootfs tar of many entries is not indexed member by member (a 7 MB gzip of empty
    entries took 1.9 GB): the scan stops at MAX_MEMBERS and the tar is applied as a stream."""
    header = tarfile.TarInfo("f").tobuf(format=tarfile.USTAR_FORMAT)
    tar = tmp_path / "many.tar.gz"
    tar.write_bytes(gzip.compress(header * (oci.MAX_MEMBERS * 3) + bytes(1024)))
    src = oci.open_source(tar)
    try:
        assert oci.image_format(src) == "rootfs"
        assert len(src.tar.members) <= oci.MAX_MEMBERS + 1
    finally:
        src.close()
    root = tmp_path / "root"
    assert sk(root, "--driver", "vfs", "image", "import", tar, "--name", "many").returncode == 0


def test_a_fifo_member_of_a_tar_image(tmp_path):
    d = tmp_path / "image"
    write_save(d)
    out = tmp_path / "image.tar"
    with tarfile.open(out, "w") as tar:
        for name in ("l0", "manifest.json"):
            tar.add(d / name, arcname=name)
        fifo = tarfile.TarInfo("c.json")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    err = one_line(sk(tmp_path / "root", "--driver", "vfs", "image", "import", out))
    assert "c.json is not a regular file" in err

