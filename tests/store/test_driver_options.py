"""Options that shape a driver's data on disk are recorded with the store: a later command
uses them without being told, and a different value is a one-line error."""

from __future__ import annotations

import json
import subprocess

import pytest
from cliutil import command

from storagekit import registry


def sk(root, *args):
    return subprocess.run([command(), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=300)


def test_devicemapper_keeps_its_filesystem_and_sizes(tmp_path, busybox_tar):
    ok, reason = registry.driver_class("devicemapper").probe(tmp_path)
    if not ok:
        pytest.skip(f"devicemapper: {reason}")
    root = tmp_path / "root"
    made = sk(root, "--driver", "devicemapper", "-o", "dm.fs=xfs", "-o", "dm.basesize=320M",
              "-o", "dm.loopdatasize=2G", "image", "import", str(busybox_tar), "--name", "bb")
    assert made.returncode == 0, made.stderr
    try:
        # a plain command uses what the store was made with: xfs, not the default ext4
        run = sk(root, "run", "--rm", "bb", "/bin/sh", "-c", "grep ' / ' /proc/mounts")
        assert run.returncode == 0, run.stderr
        assert " xfs " in run.stdout
        info = json.loads(sk(root, "--json", "info").stdout)
        assert info["driver_status"]["Backing Filesystem"] == "xfs"
        # the same values spelt otherwise are the same; other values are refused
        same = sk(root, "-o", "dm.basesize=327680K", "-o", "dm.fs=xfs", "run", "--rm", "bb",
                  "/bin/true")
        assert same.returncode == 0, same.stderr
        for option in ("dm.fs=ext4", "dm.basesize=10G", "dm.blocksize=128K"):
            bad = sk(root, "-o", option, "run", "--rm", "bb", "/bin/true")
            assert bad.returncode == 1
            line = bad.stderr.strip()
            assert "\n" not in line and option.split("=")[0] in line and "cannot change" in line
        # options that do not shape the data may differ
        other = sk(root, "-o", "dm.use_deferred_removal=true", "run", "--rm", "bb", "/bin/true")
        assert other.returncode == 0, other.stderr
    finally:
        sk(root, "image", "rm", "bb")
        sk(root, "thin", "stop", str(root / "devicemapper" / "pool"))
