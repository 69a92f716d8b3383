"""Image names and what uses an image: the reference grammar, `image rm` of an image that a
container uses (Docker's conflict), `docker save` archives of several images, and the OCI ref
name of an export as skopeo and umoci read it."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile

import pytest
from cliutil import command
from imageutil import image_config, sha
from treeutil import make_tar

from storagekit.errors import InvalidImage
from storagekit.reference import parse

LAYER_A = make_tar([{"name": "a", "data": b"image a\n"}])
LAYER_B = make_tar([{"name": "b", "data": b"image b\n"}])


def sk(root, *args, input: bytes | None = None, check: bool = True):
    proc = subprocess.run([command(), "--root", str(root), *map(str, args)],
                          input=input, capture_output=True)
    assert not check or proc.returncode == 0, proc.stderr.decode()
    return proc


def js(root, *args):
    return json.loads(sk(root, "--json", *args).stdout)


def one_line(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "internal error" not in err, err
    return err


def write_multi_save(path, images: list[tuple[list[str], list[bytes]]]) -> None:
    """A `docker save IMAGE...` archive: one manifest.json entry per image."""
    entries = []
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for tags, layers in images:
            names = []
            for layer in layers:
                n = f"{hashlib.sha256(layer).hexdigest()}/layer.tar"
                if n not in tar.getnames():
                    add(n, layer)
                names.append(n)
            config = json.dumps(image_config([sha(x) for x in layers])).encode()
            add(f"{sha(config)[7:]}.json", config)
            entries.append({"Config": f"{sha(config)[7:]}.json", "RepoTags": tags,
                            "Layers": names})
        add("manifest.json", json.dumps(entries).encode())


@pytest.mark.parametrize("bad", ["UPPER:Case", "x@sha256:1234", "a\nb", "a b", "", "a:",
                                 "-a", "a..b", "a/B", "a:" + "t" * 129, "x" * 256,
                                 "host:99999999999999999999999/x:y:z"])
def test_bad_references_are_refused(bad):
    with pytest.raises(InvalidImage, match="invalid reference format"):
        parse(bad)


@pytest.mark.parametrize("good", ["busybox", "busybox:1.36", "docker.io/library/busybox:latest",
                                  "localhost:5000/a/b_c__d-e.f:v1.0", "127.0.0.1:5000/x",
                                  "x@sha256:" + "a" * 64, "a/b:c@sha256:" + "0" * 64])
def test_good_references_parse(good):
    assert str(parse(good)) == good


@pytest.mark.parametrize("bad", ["UPPER:Case", "x@sha256:1234", "a\nb"])
def test_the_command_refuses_bad_names(tmp_path, bad):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(LAYER_A)
    root = tmp_path / "root"
    err = one_line(sk(root, "--driver", "vfs", "image", "import", tar, "--name", bad,
                      check=False))
    assert "invalid reference format" in err
    assert js(root, "image", "ls") == []


def test_a_bad_name_inside_an_archive_is_refused(tmp_path):
    save = tmp_path / "save.tar"
    write_multi_save(save, [(["Bad:Tag"], [LAYER_A])])
    root = tmp_path / "root"
    err = one_line(sk(root, "--driver", "vfs", "image", "import", save, check=False))
    assert "invalid reference format" in err
    assert js(root, "image", "ls") == [] and js(root, "layer", "ls") == []


def test_a_multi_image_docker_save_imports_every_image(tmp_path):
    save = tmp_path / "save.tar"
    write_multi_save(save, [(["first:1", "first:latest"], [LAYER_A]),
                            (["second:2"], [LAYER_A, LAYER_B])])
    root = tmp_path / "root"
    out = sk(root, "--driver", "vfs", "image", "import", save).stdout.decode().split()
    assert out == ["first:1", "second:2"]
    assert sorted(i["name"] for i in js(root, "image", "ls")) == [
        "first:1", "first:latest", "second:2"]
    assert len(js(root, "layer", "ls")) == 2  # the shared base layer once
    # --name picks one of them; a name that is none of them is an error
    other = tmp_path / "other"
    assert sk(other, "--driver", "vfs", "image", "import", save,
              "--name", "second:2").stdout.decode() == "second:2\n"
    assert [i["name"] for i in js(other, "image", "ls")] == ["second:2"]
    err = one_line(sk(other, "image", "import", save, "--name", "third:3", check=False))
    assert "no image third:3" in err


def test_image_rm_of_an_image_a_container_uses(tmp_path, busybox_tar):
    root = tmp_path / "root"
    sk(root, "--driver", "vfs", "image", "import", busybox_tar, "--name", "bb")
    sk(root, "run", "--name", "kept", "bb", "true")
    err = one_line(sk(root, "image", "rm", "bb", check=False))
    assert "conflict" in err and "must force" in err and "kept" in err
    assert [i["name"] for i in js(root, "image", "ls")] == ["bb:latest"]
    sk(root, "image", "rm", "--force", "bb")
    assert js(root, "image", "ls") == []
    assert len(js(root, "layer", "ls")) == 2  # the image layer stays with its container
    sk(root, "rm", "kept")
    assert js(root, "layer", "ls") == []


@pytest.mark.skipif(shutil.which("skopeo") is None or shutil.which("umoci") is None,
                    reason="skopeo and umoci are needed to read the export")
def test_the_export_ref_name_is_the_tag(tmp_path):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(LAYER_A)
    root = tmp_path / "root"
    sk(root, "--driver", "vfs", "image", "import", tar, "--name", "example.com/team/app:v1")
    out = tmp_path / "layout"
    sk(root, "image", "export", "example.com/team/app:v1", "-o", f"{out}/")
    (desc,) = json.loads((out / "index.json").read_text())["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": "example.com/team/app:v1",
                                   "org.opencontainers.image.ref.name": "v1"}
    ls = subprocess.run(["umoci", "ls", "--layout", str(out)], capture_output=True, text=True)
    assert ls.returncode == 0 and ls.stdout.split() == ["v1"], ls.stderr
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:v1"],
                         capture_output=True, text=True)
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == desc["digest"]
    copy = tmp_path / "copy"
    done = subprocess.run(["skopeo", "copy", f"oci:{out}:v1", f"dir:{copy}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # and the export comes back under its full name
    again = tmp_path / "again"
    assert sk(again, "--driver", "vfs", "image", "import",
              out).stdout.decode() == "example.com/team/app:v1\n"
