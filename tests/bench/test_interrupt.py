"""Ctrl-C in the middle of `storagekit bench`: the command stops, writes a partial report
that still validates, and leaves no mount, loop device, daemon or file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from benchutil import TINY, leftovers, report
from cliutil import command

from storagekit.bench import report as rmod


def _mounts_under(d: str) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4].startswith(d + "/"))


def test_sigint_mid_run_leaves_nothing_and_a_partial_report(tmp_path):
    work = tmp_path / "dir"
    work.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen([command(), "bench", "--dir", str(work), *TINY, "--rounds", "3",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        # wait until containers are mounted (the run is in its rounds), and some figures are in
        deadline = time.monotonic() + 120
        seen = 0
        while time.monotonic() < deadline and proc.poll() is None:
            seen = seen + 1 if _mounts_under(str(work)) else seen
            if seen >= 30:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert seen >= 30, "the run never mounted anything"
        # as Ctrl-C on a terminal: to the whole process group (daemons the run started too)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip() == f"storagekit: interrupted: partial report in {out}"
    rep = report(out)
    rmod.validate(rep)
    assert rep["interrupted"] and not rep["complete"]
    assert rep["samples"], "the figures measured before the interrupt are kept"
    assert (out / "report.html").read_text().count("Partial report") == 1
    # the contenders' homes are gone, and nothing uses the directory any more
    deadline = time.monotonic() + 10
    while leftovers(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(work) == []
