"""Image import and export: OCI layouts, docker save archives, root filesystems; digests,
shared layers, configs, and an export that Debian's containerd imports."""

from __future__ import annotations

import json
import os
import tarfile

import pytest
from containerd_util import running_containerd
from imageutil import sha, three_layers, write_docker_save, write_oci
from treeutil import describe, make_tar

from storagekit.errors import ImageNotFound, InvalidImage, LayerInUse
from storagekit.image import Images
from storagekit.store import Store


@pytest.fixture(params=["vfs", "overlay"])
def images(request, tmp_path):
    store = Store(tmp_path / "root", request.param)
    yield Images(store)
    store.driver.cleanup()
    store.close()


def content(images: Images, name: str) -> dict:
    image = images.get(name)
    path = images.store.get(image.top_layer)
    try:
        return describe(path)
    finally:
        images.store.put(image.top_layer)


def test_three_layer_oci_image(images, tmp_path):
    write_oci(tmp_path / "oci", three_layers(), runtime={
        "Env": ["A=1"], "Cmd": ["/bin/tool"], "Entrypoint": ["/bin/sh", "-c"],
        "WorkingDir": "/app", "User": "1000:1000", "Hostname": "img"})
    image = images.import_image(tmp_path / "oci")
    assert image.name == "test:1"
    assert image.runtime == {"Env": ["A=1"], "Cmd": ["/bin/tool"], "Entrypoint": ["/bin/sh", "-c"],
                             "WorkingDir": "/app", "User": "1000:1000", "Hostname": "img"}
    tree = content(images, "test:1")
    assert "/etc/doomed" not in tree                               # deleted file
    assert sorted(p for p in tree if p.startswith("/app/")) == ["/app/new"]  # opaque dir
    assert tree["/bin/tool"]["sha256"] == sha(b"v3 replaced")[7:]  # replaced file
    assert tree["/etc/motd"]["target"] == "/etc/issue"             # file replaced by a symlink
    assert len(images.layers(image)) == 3
    chain = images.store.layer(image.top_layer).chain_id
    diffs = [sha(x) for x in three_layers()]
    from storagekit.store import chain_id

    assert chain == chain_id(chain_id(chain_id(None, diffs[0]), diffs[1]), diffs[2])


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_compressions_and_tar_layout(images, tmp_path, compression):
    write_oci(tmp_path / "oci", three_layers(), compression=compression)
    with tarfile.open(tmp_path / "oci.tar", "w") as tar:
        for p in sorted((tmp_path / "oci").rglob("*")):
            tar.add(p, arcname=str(p.relative_to(tmp_path / "oci")), recursive=False)
    image = images.import_image(tmp_path / "oci.tar", name="from-tar")
    assert image.name == "from-tar:latest"
    assert "/app/new" in content(images, "from-tar")


def test_shared_layers_are_stored_once(images, tmp_path):
    a, b = three_layers()[:2], three_layers()
    write_oci(tmp_path / "a", a, name="a:1")
    write_oci(tmp_path / "b", b, name="b:1")
    ia = images.import_image(tmp_path / "a")
    ib = images.import_image(tmp_path / "b")
    assert len(images.store.layers()) == 3
    assert images.layers(ib)[:2] == images.layers(ia)
    with pytest.raises(LayerInUse, match="image a:1"):
        images.store.remove(ia.top_layer)
    layers_a = images.layers(ia)
    assert images.remove("b:1") == [ib.top_layer]  # only the layer nobody else uses goes
    assert images.remove("a:1") == layers_a[::-1]
    assert images.store.layers() == []
    with pytest.raises(ImageNotFound):
        images.get("a:1")


def test_docker_save_archive(images, tmp_path):
    write_docker_save(tmp_path / "saved.tar", three_layers(), runtime={"Cmd": ["sh"]})
    image = images.import_image(tmp_path / "saved.tar")
    assert image.name == "saved:1"
    assert image.runtime["Cmd"] == ["sh"]
    assert "/app/new" in content(images, "saved:1")


def _tamper(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["layer-blob", "config-diff-id", "manifest", "size"])
def test_digest_mismatch_leaves_nothing(images, tmp_path, where):
    write_oci(tmp_path / "ok", three_layers()[:1], name="keep:1")
    images.import_image(tmp_path / "ok")
    before = [layer.id for layer in images.store.layers()]
    layers = three_layers()
    if where == "config-diff-id":
        bad = [sha(x) for x in layers]
        bad[2] = sha(b"something else")
        from imageutil import image_config

        write_oci(tmp_path / "bad", layers, compression="none",
                  config_override=image_config(bad))
    else:
        info = write_oci(tmp_path / "bad", layers, compression="none")
        blobs = tmp_path / "bad/blobs/sha256"
        if where == "layer-blob":  # the last layer's bytes no longer match its digest
            _tamper(blobs / info["layers"][2]["digest"][7:], 600)
        elif where == "manifest":
            _tamper(blobs / info["manifest"][7:], 10)
        else:
            idx = json.loads((tmp_path / "bad/index.json").read_text())
            m = json.loads((blobs / info["manifest"][7:]).read_text())
            m["layers"][1]["size"] += 1
            data = json.dumps(m).encode()
            (blobs / sha(data)[7:]).write_bytes(data)
            idx["manifests"][0].update(digest=sha(data), size=len(data))
            (tmp_path / "bad/index.json").write_text(json.dumps(idx))
    with pytest.raises(InvalidImage) as e:
        images.import_image(tmp_path / "bad")
    assert "digest" in str(e.value) or "bytes" in str(e.value)
    assert [layer.id for layer in images.store.layers()] == before
    assert [i.name for i in images.list()] == ["keep:1"]
    assert not any((images.store.root / "locks").iterdir())


def test_digest_mismatch_in_a_tar_stream(images, tmp_path):
    info = write_oci(tmp_path / "bad", three_layers(), compression="gzip")
    # the same size, other bytes: only the digest computed while streaming can tell
    victim = tmp_path / "bad/blobs/sha256" / info["layers"][1]["digest"][7:]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01  # inside the gzip trailer's CRC
    victim.write_bytes(bytes(data))
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        tar.add(tmp_path / "bad", arcname=".")
    with pytest.raises(InvalidImage):
        images.import_image(tmp_path / "bad.tar")
    assert images.store.layers() == []


def test_rootfs_directory_and_tar(images, tmp_path):
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "x").write_text("x")
    os.symlink("x", root / "bin" / "y")
    image = images.import_image(root, name="fromdir")
    assert image.name == "fromdir:latest"
    assert describe(root) == content(images, "fromdir")
    data = make_tar([{"name": "bin", "type": "dir"}, {"name": "bin/x", "data": b"x"}])
    (tmp_path / "rootfs.tar.gz").write_bytes(__import__("gzip").compress(data))
    image2 = images.import_image(tmp_path / "rootfs.tar.gz", name="fromtar")
    assert images.store.layer(image2.top_layer).diff_id == sha(data)
    with pytest.raises(InvalidImage, match="needs a name"):
        images.import_image(root)


def test_export_round_trip(images, tmp_path):
    write_oci(tmp_path / "oci", three_layers(), runtime={"Cmd": ["/bin/tool"], "Env": ["X=1"]})
    images.import_image(tmp_path / "oci", name="orig")
    before = content(images, "orig")
    images.export("orig", tmp_path / "out.tar")
    images.export("orig", str(tmp_path / "outdir") + "/", compression="zstd")
    assert json.loads((tmp_path / "outdir/oci-layout").read_text())["imageLayoutVersion"]
    images.remove("orig")
    copy = images.import_image(tmp_path / "out.tar", name="copy")
    assert copy.runtime["Cmd"] == ["/bin/tool"]
    assert content(images, "copy") == before
    images.import_image(tmp_path / "outdir", name="again")
    assert content(images, "again") == before
    # the docker manifest.json of the export names the same layers
    with tarfile.open(tmp_path / "out.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["orig:latest"] and len(manifest[0]["Layers"]) == 3


def test_export_is_accepted_by_containerd(images, tmp_path, busybox_tar):
    images.import_image(busybox_tar, name="busybox")
    write_oci(tmp_path / "oci", three_layers())
    images.import_image(tmp_path / "oci", name="three")
    images.export("busybox", tmp_path / "busybox-oci.tar", compression="gzip")
    images.export("three", tmp_path / "three-oci.tar")
    with running_containerd() as ctrd:
        for archive in ("busybox-oci.tar", "three-oci.tar"):
            r = ctrd.ctr("images", "import", str(tmp_path / archive), check=False)
            assert r.returncode == 0, r.stderr
        listed = ctrd.ctr("images", "ls", "-q").stdout.split()
        assert "docker.io/library/busybox:latest" in listed
        assert "docker.io/library/three:latest" in listed
        r = ctrd.ctr("run", "--rm", "docker.io/library/busybox:latest", "sk-check",
                     "/bin/sh", "-c", "echo booted; ls /etc/passwd", check=False)
        assert r.returncode == 0 and r.stdout.split() == ["booted", "/etc/passwd"], r.stderr
