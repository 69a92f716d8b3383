"""The storagekit command line, run as a user runs it."""

from __future__ import annotations

import gzip
import hashlib
import os

import pytest
from clirun import js, sk
from treeutil import make_tar

BASE = make_tar([
    {"name": "etc", "type": "dir"},
    {"name": "etc/hostname", "data": b"base\n"},
    {"name": "etc/gone", "data": b"bye"},
])


@pytest.fixture
def root(tmp_path):
    yield tmp_path / "root"


def test_layer_workflow(root, tmp_path):
    base_tar = tmp_path / "base.tar.gz"
    base_tar.write_bytes(gzip.compress(BASE))
    assert sk(root, "--driver", "vfs", "layer", "create", "base").stdout.decode() == "base\n"
    assert sk(root, "layer", "apply", "base", str(base_tar)).stdout.decode() == "8\n"
    sk(root, "layer", "create", "--parent", "base", "--rw", "--label", "a=b", "ctr")
    layers = {layer["id"]: layer for layer in js(root, "layer", "ls")}
    assert layers["base"]["diff_id"] == "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert layers["ctr"]["kind"] == "active" and layers["ctr"]["labels"] == {"a": "b"}

    path = sk(root, "layer", "mount", "ctr").stdout.decode().strip()
    with open(os.path.join(path, "etc/hostname"), "w") as f:
        f.write("changed\n")
    os.unlink(os.path.join(path, "etc/gone"))
    assert js(root, "layer", "inspect", "ctr")["mounted"] == 1
    sk(root, "layer", "umount", "ctr")

    assert sk(root, "layer", "changes", "ctr").stdout.decode().splitlines() == [
        "C /etc", "D /etc/gone", "C /etc/hostname"
    ]
    assert js(root, "layer", "size", "ctr") == {"id": "ctr", "size": 8}

    out = tmp_path / "ctr.tar"
    result = js(root, "layer", "diff", "ctr", "-o", str(out))
    assert result["diff_id"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    # the same diff on stdout
    assert sk(root, "layer", "diff", "ctr").stdout == out.read_bytes()
    # apply from stdin into a new layer on base
    sk(root, "layer", "create", "--parent", "base", "copy")
    sk(root, "layer", "apply", "copy", "-", input=out.read_bytes())
    assert sk(root, "layer", "changes", "copy", "--parent", "ctr").stdout == b""

    sk(root, "layer", "rm", "copy", "ctr", "base")
    assert js(root, "layer", "ls") == []


def test_errors_are_one_line(root, tmp_path):
    sk(root, "--driver", "vfs", "layer", "create", "a")
    cases = [
        ("layer", "rm", "missing"),
        ("layer", "create", "a"),
        ("layer", "create", "--parent", "missing", "b"),
        ("layer", "create", "../x"),
        ("layer", "apply", "a", str(tmp_path / "no-such-file.tar")),
        ("layer", "mount", "missing"),
        ("--driver", "nosuch", "layer", "ls"),
        ("-o", "bogus=1", "layer", "ls"),
        ("layer", "frobnicate"),
        (),
    ]
    for args in cases:
        proc = sk(root, *args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0, args
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err
        assert err.startswith("storagekit: "), err


def test_parser_of_the_named_command_alone():
    """main() builds only the parser of the command argv names; the global options (with
    their values, which may look like commands) come first."""
    from storagekit import cli

    assert cli._command_in(["--root", "run", "-o", "k=v", "--json", "layer", "ls"]) == "layer"
    assert cli._command_in(["--root=/x", "--driver", "vfs", "run", "busybox"]) == "run"
    assert cli._command_in(["--help"]) is None and cli._command_in(["nosuch"]) is None
    for name in cli.COMMANDS:
        alone = cli.build_parser(name)._subparsers._group_actions[0].choices
        assert list(alone) == [name]
    whole = cli.build_parser()._subparsers._group_actions[0].choices
    assert list(whole) == list(cli.COMMANDS)
    args = cli.build_parser("run").parse_args(["--root", "/r", "run", "--rm", "img", "true"])
    assert (args.root, args.rm, args.image, args.cmd) == ("/r", True, "img", ["true"])


def test_bad_archive_message(root, tmp_path):
    sk(root, "--driver", "vfs", "layer", "create", "a")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(make_tar([{"name": "../../evil", "data": b"x"}]))
    proc = sk(root, "layer", "apply", "a", str(bad), check=False)
    assert proc.returncode == 1
    assert "invalid layer archive" in proc.stderr.decode()
    assert "was removed" in proc.stderr.decode()
    assert js(root, "layer", "ls") == []


def test_refuses_to_remove_parent_or_mounted(root):
    sk(root, "--driver", "vfs", "layer", "create", "p")
    sk(root, "layer", "create", "--parent", "p", "c")
    proc = sk(root, "layer", "rm", "p", check=False)
    assert proc.returncode == 1 and b"children" in proc.stderr
    sk(root, "layer", "mount", "c")
    proc = sk(root, "layer", "rm", "c", check=False)
    assert proc.returncode == 1 and b"mounted" in proc.stderr
    sk(root, "layer", "umount", "c")
    sk(root, "layer", "rm", "c")


def test_drivers_and_info(root):
    drivers = js(root, "drivers")
    vfs = next(d for d in drivers if d["name"] == "vfs")
    assert vfs["supported"] is True and vfs["reason"]
    root.mkdir()  # info makes a store in an existing directory, never a missing root
    info = js(root, "--driver", "vfs", "info")
    assert info["driver"] == "vfs"
    assert info["root"] == str(root)
    with open("/proc/self/mounts") as f:
        fstypes = {line.split()[2] for line in f}
    assert info["backing_filesystem"] in fstypes
    dev = info["block_device"]
    st = os.stat(root)
    assert dev["device_number"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if dev.get("device"):  # a real disk under the root: its facts come from sysfs
        assert os.path.exists(dev["device"])
        with open(f"/sys/class/block/{os.path.basename(dev['device'])}/size") as f:
            assert dev["size_bytes"] == int(f.read()) * 512
        sysdisk = f"/sys/class/block/{os.path.basename(dev['disk'])}"
        with open(f"{sysdisk}/queue/rotational") as f:
            assert dev["rotational"] == (f.read().strip() == "1")
        with open(f"{sysdisk}/queue/scheduler") as f:
            assert dev["scheduler"] in f.read()
    human = sk(root, "info").stdout.decode()
    assert "Backing filesystem:" in human and "Driver status:" in human


def test_info_on_a_loop_device(xfs_dir):
    root = xfs_dir / "store"
    root.mkdir()
    info = js(root, "--driver", "vfs", "info")
    dev = info["block_device"]
    assert info["backing_filesystem"] == "xfs"
    assert dev["device"].startswith("/dev/loop")
    assert dev["loop_backing_file"].endswith("/image")
    assert dev["size_bytes"] == 512 << 20
    assert dict(info["driver_status"])["Layer data sharing"] == "reflink (FICLONE)"


def test_image_and_container_commands(root, tmp_path, busybox_tar):
    assert sk(root, "--driver", "vfs", "image", "import", str(busybox_tar), "--name",
              "bb").stdout.decode() == "bb:latest\n"
    (image,) = js(root, "image", "ls")
    assert image["name"] == "bb:latest" and image["layers"] == 1
    proc = sk(root, "run", "--name", "c1", "--hostname", "h1", "-e", "X=42", "bb",
              "/bin/sh", "-c", "echo $X $(hostname); exit 7", check=False)
    assert proc.returncode == 7 and proc.stdout.decode() == "42 h1\n"
    (c,) = js(root, "ps")
    assert (c["name"], c["state"], c["exit_code"]) == ("c1", "exited", 7)
    out = tmp_path / "bb-oci.tar"
    assert js(root, "image", "export", "bb", "-o", str(out))["name"] == "bb:latest"
    proc = sk(root, "image", "rm", "bb", check=False)  # Docker's conflict, one line
    assert proc.returncode == 1 and b"must force" in proc.stderr
    proc = sk(root, "image", "rm", "--force", "bb")  # the container keeps the layers alive
    assert proc.stdout.decode() == "bb (0 layers removed)\n"
    sk(root, "rm", "c1")
    assert js(root, "ps") == [] and js(root, "layer", "ls") == []
    sk(root, "image", "import", str(out))  # the export names itself
    assert [i["name"] for i in js(root, "image", "ls")] == ["bb:latest"]
    for args in (("image", "rm", "nope"), ("rm", "nope"), ("run", "nope", "true"),
                 ("image", "import", str(tmp_path / "missing.tar"))):
        proc = sk(root, *args, check=False)
        assert proc.returncode == 1 and len(proc.stderr.decode().splitlines()) == 1, args
