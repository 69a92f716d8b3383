"""`storagekit thin ...` as a user runs it: every command, and one-line errors with a
non-zero status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pooldaemon import require_fuse_and_loop, teardown_pool

from storagekit.engines.thin import loopdev


def sk(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "storagekit", "thin", *map(str, args)],
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"thin {' '.join(map(str, args))}: {proc.stderr}"
    return proc


def fails(*args, code=1) -> str:
    proc = sk(*args, check=False)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("storagekit: ")
    return lines[0]


@pytest.fixture
def cli_pool(tmp_path):
    require_fuse_and_loop()
    d = tmp_path / "cli-pool"
    try:
        yield d
    finally:
        teardown_pool(d)


def test_every_command(cli_pool):
    d = cli_pool
    line = sk("create-pool", d, "--data-size", "512M", "--block-size", "128K",
              "--metadata-size", "4M").stdout.strip()
    # <tid> <used>/<total meta> <used>/<total data> <held> rw discards no_space needs_check lwm
    fields = line.split()
    assert fields[0] == "0" and fields[2] == "0/4096" and fields[1].endswith("/1024")
    assert fields[4:8] == ["rw", "discard_passdown", "queue_if_no_space", "-"]
    sk("message", d, "create_thin 1")
    sk("message", d, "create_snap", "2", "1")  # the words may come apart
    sk("message", d, "set_transaction_id 0 1")
    loop = sk("activate", d, 1, "--size", "64M").stdout.strip()
    assert loopdev.backing_file(loop) == str(d / "dev" / "1")
    assert sk("active", d).stdout.split() == ["1", loop]
    status = json.loads(sk("status", d, "--json").stdout)
    assert status["transaction_id"] == 1 and status["daemon"]
    assert {t["id"]: t["loop"] for t in status["thin_devices"]} == {1: loop, 2: None}
    assert labelled(sk("status", d).stdout)["Status line"] == status["line"]
    sk("message", d, "reserve_metadata_snap")
    assert labelled(sk("status", d).stdout)["Held metadata root"] != "-"
    sk("message", d, "release_metadata_snap")
    sk("deactivate", d, 1)
    assert sk("active", d).stdout == ""
    assert "examining" in sk("check", d).stdout
    sk("message", d, "delete 2")
    assert [t["id"] for t in json.loads(sk("status", d, "--json").stdout)["thin_devices"]] == [1]
    assert sk("stop", d).returncode == 0  # no daemon: nothing to do


def labelled(text: str) -> dict[str, str]:
    """`thin status`'s "Label:   value" lines (up to its table of thin devices)."""
    fields = {}
    for line in text.splitlines():
        if not line:
            break
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_one_line_errors(cli_pool, tmp_path):
    d = cli_pool
    assert "not a thin pool" in fails("status", tmp_path / "nowhere")
    assert "is not a size" in fails("create-pool", d, "--data-size", "12Q")
    assert "multiple of 64K" in fails("create-pool", d, "--block-size", "100K")
    assert "must not be negative" in fails("create-pool", d, "--no-space-timeout", "-1")
    sk("create-pool", d, "--data-size", "256M", "--no-space-timeout", "2.5")
    assert json.loads((d / "pool.json").read_text())["no_space_timeout"] == 2.5
    assert "already holds a thin pool" in fails("create-pool", d)
    assert "not a pool message" in fails("message", d, "make_thin 1")
    assert "not a pool message" in fails("message", d, "create_thin 99999999")
    sk("message", d, "create_thin 1")
    assert "already exists" in fails("message", d, "create_thin 1")
    assert "origin device does not exist" in fails("message", d, "create_snap 2 5")
    assert "no such thin device" in fails("message", d, "delete 4")
    assert "current id is 0, not 3" in fails("message", d, "set_transaction_id 3 4")
    assert "no metadata snapshot is held" in fails("message", d, "release_metadata_snap")
    assert "no recorded size" in fails("activate", d, 1)
    assert "no such thin device" in fails("activate", d, 3, "--size", "1M")
    assert "is not a number" in fails("activate", d, "x", code=2)
    assert "is not active" in fails("deactivate", d, 1)
    sk("activate", d, 1, "--size", "16M")
    assert "deactivate it first" in fails("message", d, "delete 1")
    assert "at rest" in fails("check", d)
    assert "active with size" in fails("activate", d, 1, "--size", "32M")
    sk("deactivate", d, 1)
