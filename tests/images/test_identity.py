"""An imported image keeps its identity: `image export` gives back the blobs it came in as
(compressed layers, config, manifest), so its image ID, manifest digest, layer digests and
diff IDs are the same, as docker save and containerd give them; re-importing the export
stores no layer twice; and the kept blobs go with the last image that uses them."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
from cliutil import command
from imageutil import sha, three_layers, write_docker_save, write_oci


def sk(root, *args):
    proc = subprocess.run([command(), "--root", str(root), *map(str, args)],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def js(root, *args):
    return json.loads(sk(root, "--json", *args))


def blobs(directory) -> dict[str, bytes]:
    d = directory / "blobs" / "sha256"
    return {name: (d / name).read_bytes() for name in os.listdir(d)}


@pytest.fixture(params=["vfs", "overlay"])
def root(request, tmp_path):
    r = tmp_path / "root"
    r.mkdir()  # info makes the store in an existing directory, never a missing root
    sk(r, "--driver", request.param, "info")
    return r


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_an_oci_layout_comes_back_byte_for_byte(root, tmp_path, compression):
    source = tmp_path / "oci"
    written = write_oci(source, three_layers(), compression=compression)
    image = js(root, "image", "import", source)
    assert image["id"] == written["config"]
    out = tmp_path / "out"
    sk(root, "image", "export", "test:1", "-o", f"{out}/")
    (desc,) = json.loads((out / "index.json").read_text())["manifests"]
    assert desc["digest"] == written["manifest"]
    assert blobs(out) == blobs(source)  # config, manifest and every layer blob, same bytes
    layers = {layer["id"] for layer in js(root, "layer", "ls")}
    assert len(layers) == 3
    again = js(root, "image", "import", out, "--name", "again:1")
    assert again["id"] == image["id"] and again["top_layer"] == image["top_layer"]
    assert {layer["id"] for layer in js(root, "layer", "ls")} == layers


def test_a_docker_save_keeps_its_ids(root, tmp_path):
    save = tmp_path / "save.tar"
    layers = three_layers()
    write_docker_save(save, layers)
    with tarfile.open(save) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        config = tar.extractfile(entry["Config"]).read()
    image = js(root, "image", "import", save)
    assert image["id"] == sha(config)
    out = tmp_path / "out.tar"
    sk(root, "image", "export", "saved:1", "-o", out)
    with tarfile.open(out) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        assert tar.extractfile(entry["Config"]).read() == config
        exported = [tar.extractfile(name).read() for name in entry["Layers"]]
    assert exported == layers  # the layer tars as they came: digests are the diff IDs
    assert json.loads(config)["rootfs"]["diff_ids"] == [sha(x) for x in layers]
    before = {layer["id"] for layer in js(root, "layer", "ls")}
    assert js(root, "image", "import", out, "--name", "saved:2")["id"] == image["id"]
    assert {layer["id"] for layer in js(root, "layer", "ls")} == before


def test_the_kept_blobs_go_with_the_last_image(root, tmp_path):
    source = tmp_path / "oci"
    write_oci(source, three_layers(), compression="gzip")
    sk(root, "image", "import", source)
    sk(root, "image", "import", source, "--name", "other:1")
    content = root / "content" / "blobs" / "sha256"
    assert sorted(os.listdir(content)) == sorted(blobs(source))
    sk(root, "image", "rm", "test:1")
    assert sorted(os.listdir(content)) == sorted(blobs(source))  # other:1 still uses them
    sk(root, "image", "rm", "other:1")
    assert os.listdir(content) == []
    assert os.listdir(root / "content" / "images") == []


def test_a_compression_asked_for_writes_new_blobs(root, tmp_path):
    source = tmp_path / "oci"
    written = write_oci(source, three_layers(), compression="gzip")
    sk(root, "image", "import", source)
    out = tmp_path / "out"
    sk(root, "image", "export", "test:1", "-o", f"{out}/", "--compress", "zstd")
    (desc,) = json.loads((out / "index.json").read_text())["manifests"]
    assert desc["digest"] != written["manifest"]
    manifest = json.loads((out / "blobs" / "sha256" / desc["digest"][7:]).read_text())
    assert {x["mediaType"] for x in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"}
