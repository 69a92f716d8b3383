"""Progress on a terminal (what runs, how far, time left), nothing when piped."""

from __future__ import annotations

import os
import pty
import subprocess

from benchutil import TINY, bench
from cliutil import command


def test_progress_on_a_terminal(tmp_path):
    work = tmp_path / "dir"
    work.mkdir()
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([command(), "bench", "--dir", str(work), *TINY, "--drivers",
                                 "vfs", "--only", "disk,deploy", "-o", str(tmp_path / "out")],
                                stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the command closed the terminal's last descriptor
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0, shown
    assert "making the images on vfs" in shown
    assert "round 1/1: disk on vfs" in shown and "round 1/1: deploy on host fs" in shown
    assert "left] " in shown  # the time left, once a step has been timed
    # making the images, disk and deploy on each, but ctr run only boots (no disk)
    total = len(["vfs", "host fs", "kernel overlay", "fuse-overlayfs"]) * 3 + 2
    assert f"/{total}" in shown


def test_quiet_when_piped(tmp_path):
    work = tmp_path / "dir"
    work.mkdir()
    proc = bench("--dir", work, *TINY, "--drivers", "vfs", "--only", "disk",
                 "-o", tmp_path / "out")
    assert proc.stderr == ""
    assert proc.stdout == f"report: {tmp_path / 'out'}/report.html\n"
