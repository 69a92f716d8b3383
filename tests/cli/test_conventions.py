"""What docker and ctr users expect of a command line: --version, a closed pipe, where a store
is made (and where not), a labelled thin status, a demo that keeps to its --root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from clirun import js, one_line_error, sk
from cliutil import command

from storagekit import __version__


def test_version_flag_and_command(tmp_path):
    out = subprocess.run([command(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"storagekit version {__version__}\n"
    data = js(tmp_path / "unused", "version")
    assert data["version"] == __version__ and data["kernel"] == os.uname().release
    assert data["native"].endswith(".so")
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("how", ["command", "module"])
def test_a_closed_pipe_is_not_an_error(tmp_path, how):
    """`storagekit drivers | head -0`: the reader is gone before we write. No message, and
    the status a tool killed by SIGPIPE has (what a shell shows for `cat` in that place)."""
    argv = [command()] if how == "command" else [sys.executable, "-m", "storagekit"]
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([*argv, "--root", str(tmp_path), "drivers"], stdout=write,
                              stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_empty_root_is_bad_usage():
    proc = subprocess.run([command(), "--root", "", "info"], capture_output=True)
    assert proc.returncode == 2
    assert one_line_error(proc) == "storagekit: --root must not be empty"


@pytest.mark.parametrize("words", [["info"], ["layer", "ls"], ["image", "ls"], ["ps"],
                                   ["prune"], ["layer", "inspect", "x"]])
def test_reading_a_missing_root_says_so_and_makes_nothing(tmp_path, words):
    root = tmp_path / "typo"
    line = one_line_error(sk(root, *words, check=False))
    assert line.startswith(f"storagekit: no store at {root}:")
    assert not root.exists()


def test_creating_commands_make_the_root(tmp_path):
    root = tmp_path / "new" / "root"
    sk(root, "--driver", "vfs", "layer", "create", "base")
    assert [layer["id"] for layer in js(root, "layer", "ls")] == ["base"]


@pytest.mark.parametrize("driver", ["nosuch", "aufs-typo"])
def test_unknown_driver_on_a_new_root_leaves_nothing(tmp_path, driver):
    root = tmp_path / "new"
    line = one_line_error(sk(root, "--driver", driver, "layer", "create", "x", check=False))
    assert f"no storage driver named {driver!r}" in line
    assert not root.exists()


def test_thin_status_is_labelled(tmp_path):
    pool = tmp_path / "pool"
    sk(tmp_path / "unused", "thin", "create-pool", pool, "--data-size", "64M")
    try:
        sk(tmp_path / "unused", "thin", "message", pool, "create_thin", "7")
        full = js(tmp_path / "unused", "thin", "status", pool)
        text = sk(tmp_path / "unused", "thin", "status", pool).stdout.decode()
    finally:
        sk(tmp_path / "unused", "thin", "stop", pool, check=False)
    fields = dict(line.split(":", 1) for line in text.splitlines()[:12])
    assert fields["Pool"].strip() == str(pool)
    assert fields["Transaction ID"].strip() == "0"
    assert fields["Data blocks"].strip().startswith(
        f"{full['used_data_blocks']} / {full['total_data_blocks']} ")
    assert fields["Thin devices"].strip() == "1"
    assert fields["Status line"].strip() == full["line"]
    assert text.splitlines()[13].split() == ["ID", "MAPPED", "BLOCKS", "MAPPED", "SIZE", "LOOP"]
    assert text.splitlines()[14].split()[0] == "7"


def test_demo_keeps_to_its_root(tmp_path):
    """`demo --root R` works under R and leaves R as it found it: absent stays absent, an
    existing directory keeps exactly what it held."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine").write_text("x")
    for root in (tmp_path / "absent", kept):
        proc = sk(root, "--json", "demo")
        results = json.loads(proc.stdout)["results"]
        assert results and all(r["booted"] and r["round_trip"] for r in results), results
        assert all(r["store"].startswith(f"{root}/storagekit-demo-") for r in results)
    assert not (tmp_path / "absent").exists()
    assert sorted(p.name for p in kept.iterdir()) == ["mine"]
