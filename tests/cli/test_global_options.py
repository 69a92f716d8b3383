"""The global options (--root, --driver, -o/--storage-opt, --json) work before the command
and after it, at every level (`storagekit layer ls --json`, `storagekit thin status DIR
--json`), and the container command after `run IMAGE` keeps every word of its own."""

from __future__ import annotations

import json
import subprocess

from clirun import js, one_line_error, sk
from cliutil import command


def test_json_after_the_command(tmp_path):
    root = tmp_path / "root"
    assert js(root, "drivers") == json.loads(sk(root, "drivers", "--json").stdout)
    created = json.loads(sk(root, "layer", "create", "base", "--driver", "vfs",
                            "--json").stdout)
    assert (created["id"], created["kind"]) == ("base", "committed")
    assert [layer["id"] for layer in json.loads(sk(root, "layer", "ls", "--json").stdout)] == [
        "base"]
    # between the group and its command too
    assert json.loads(sk(root, "layer", "--json", "size", "base").stdout) == {
        "id": "base", "size": 0}
    assert sk(root, "layer", "ls").stdout.startswith(b"ID")


def test_root_and_driver_after_the_command(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    proc = subprocess.run([command(), "layer", "create", "x", "--root", str(there),
                           "--driver", "vfs"], capture_output=True, check=True)
    assert proc.stdout == b"x\n"
    assert [layer["id"] for layer in js(there, "layer", "ls")] == ["x"]
    # given twice, the one after the command counts (as a repeated option does)
    assert [layer["id"] for layer in js(here, "layer", "ls", "--root", str(there))] == ["x"]
    assert not here.exists()
    assert js(there, "info", "--driver", "vfs")["driver"] == "vfs"


def test_storage_options_before_and_after_the_command_add_up(tmp_path):
    root = tmp_path / "root"
    sk(root, "--driver", "vfs", "layer", "create", "base")
    # the option after the command is read ...
    err = one_line_error(sk(root, "-o", "vfs.reflink=false", "layer", "ls", "-o", "zzz=1",
                            check=False))
    assert "unknown option 'zzz'" in err
    # ... and does not replace the one before it
    err = one_line_error(sk(root, "-o", "zzz=1", "layer", "ls", "--storage-opt",
                            "vfs.reflink=false", check=False))
    assert "unknown option 'zzz'" in err
    err = one_line_error(sk(root, "layer", "-o", "vfs.reflink=nope", "ls", check=False))
    assert "vfs.reflink" in err
    assert js(root, "-o", "vfs.reflink=false", "layer", "ls", "-o", "vfs.reflink=true")


def test_commands_with_an_own_dash_o_take_storage_opt_after_them(tmp_path):
    """`layer diff -o` and `image export -o` name the output: after those commands the
    driver options are spelled --storage-opt."""
    root = tmp_path / "root"
    sk(root, "--driver", "vfs", "layer", "create", "base")
    out = tmp_path / "base.tar"
    sk(root, "layer", "diff", "base", "-o", out)
    assert out.stat().st_size > 0
    err = one_line_error(sk(root, "layer", "diff", "base", "-o", out, "--storage-opt",
                            "zzz=1", check=False))
    assert "unknown option 'zzz'" in err


def test_thin_commands_use_the_global_json(tmp_path):
    pool = tmp_path / "pool"
    root = tmp_path / "unused-root"
    try:
        created = json.loads(sk(root, "thin", "create-pool", pool, "--data-size", "64M",
                                "--json").stdout)
        after = json.loads(sk(root, "thin", "status", pool, "--json").stdout)
        before = js(root, "thin", "status", pool)
        between = json.loads(sk(root, "thin", "--json", "status", pool).stdout)
        assert created["line"] == after["line"] == before["line"] == between["line"]
        assert before["thin_devices"] == [] and before["transaction_id"] == 0
        labelled = sk(root, "thin", "status", pool).stdout.decode().splitlines()
        assert labelled[-1].split(":", 1)[1].strip() == before["line"]
        assert js(root, "thin", "active", pool) == {}
        assert json.loads(sk(root, "thin", "active", pool, "--json").stdout) == {}
    finally:
        sk(root, "thin", "stop", pool, check=False)


def test_the_container_command_keeps_its_words(tmp_path, busybox_tar):
    """After `run IMAGE` every word is the container's, global options' spellings too."""
    root = tmp_path / "root"
    sk(root, "--driver", "vfs", "image", "import", busybox_tar, "--name", "bb")
    proc = sk(root, "run", "--rm", "bb", "/bin/echo", "--json", "--root", "x", "-o", "k=v")
    assert proc.stdout == b"--json --root x -o k=v\n"
    # before the image they are storagekit's
    other = tmp_path / "other"
    proc = sk(other, "run", "--root", root, "--rm", "bb", "/bin/echo", "hi")
    assert proc.stdout == b"hi\n" and not other.exists()
    assert js(root, "ps") == []


def test_a_global_option_without_its_value_is_a_usage_error(tmp_path):
    for args in (("layer", "ls", "--root"), ("drivers", "--driver"), ("layer", "ls", "-o")):
        proc = sk(tmp_path / "root", *args, check=False)
        assert proc.returncode == 2, args
        one_line_error(proc)
