"""The daemon and its clients dying at the worst moments: a client killed just as the daemon
it started reports ready, a daemon killed with its loop devices attached and its mount
detached, a daemon killed under a running container. Nothing may be left that the normal
commands cannot clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cliutil import command
from pooldaemon import fresh_pool, process_gone, wait_gone

from storagekit import registry
from storagekit.engines import thin
from storagekit.engines.thin import loopdev
from storagekit.engines.thin.layout import PoolDir
from storagekit.engines.thin.stale import clean_stale


@pytest.fixture
def pool(tmp_path):
    yield from fresh_pool(tmp_path)


def test_a_client_dead_before_the_daemon_reports_ready(pool):
    """The daemon's ready pipe has no reader any more: it serves on, and its device can be
    deactivated as usual (it used to die of the broken pipe and leak the loop device)."""
    thin.message(pool, "create_thin 1")
    r, w = os.pipe()
    os.close(r)  # the client that would read the ready line is gone
    here = os.path.dirname(os.path.dirname(os.path.abspath(thin.__file__)))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(here))}
    with open(pool / "daemon.log", "ab") as log:  # the daemon keeps these open
        subprocess.run([sys.executable, "-S", "-m", "storagekit.engines.thin.daemon",
                        str(pool), "--activate", f"1:{64 << 20}", "--ready-fd", str(w)],
                       pass_fds=(w,), env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, timeout=60)
    os.close(w)
    deadline = time.monotonic() + 30
    while 1 not in thin.active(pool):
        assert time.monotonic() < deadline, "the daemon did not serve its device"
        time.sleep(0.05)
    loop = thin.active(pool)[1]
    assert loopdev.backing_file(loop) is not None
    thin.deactivate(pool, 1)
    wait_gone(pool)
    assert loopdev.backing_file(loop) is None
    assert "serving on" in (pool / "daemon.log").read_text()


def test_loop_devices_of_a_killed_daemon_are_found_after_its_mount_went(pool):
    """Killed, the daemon leaves its loop devices on a dead FUSE mount; once that mount is
    lazily detached (as anyone cleaning up does), their backing files are named "/<id>" and
    no longer point at the pool. The next start still finds and detaches them."""
    for dev in (1, 2):
        thin.message(pool, f"create_thin {dev}")
    loops = [thin.activate(pool, dev, 64 << 20) for dev in (1, 2)]
    pid = thin.daemon_pid(pool)
    os.kill(pid, signal.SIGKILL)
    assert process_gone(pid)
    subprocess.run(["umount", "-l", str(pool / "dev")], check=True)
    assert all(loopdev.backing_file(loop) in ("/1", "/2") for loop in loops)
    report = clean_stale(PoolDir.at(pool))
    assert sum("stale" in line for line in report) == 2, report
    assert all(loopdev.backing_file(loop) is None for loop in loops)
    # and the pool works on
    loop = thin.activate(pool, 1, 64 << 20)
    thin.deactivate(pool, 1)
    assert loopdev.backing_file(loop) is None


def sk(root, *args, **kw):
    return subprocess.run([command(), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=300, **kw)


def test_a_daemon_killed_under_a_running_container(tmp_path, busybox_tar):
    ok, reason = registry.driver_class("devicemapper").probe(tmp_path)
    if not ok:
        pytest.skip(f"devicemapper: {reason}")
    root = tmp_path / "root"
    assert sk(root, "--driver", "devicemapper", "image", "import", str(busybox_tar),
              "--name", "bb").returncode == 0
    pool = root / "devicemapper" / "pool"
    run = subprocess.Popen([command(), "--root", str(root), "run", "--name", "c1", "bb",
                            "/bin/sh", "-c", "echo running; sleep 1; exit 3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline() == "running\n"  # the container runs: now kill the daemon
    pid = thin.daemon_pid(pool)
    os.kill(pid, signal.SIGKILL)
    assert process_gone(pid)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 3, err  # the container's own status, not storagekit's failure
    # the normal commands clean everything up
    for args in (["rm", "c1"], ["image", "rm", "bb"], ["prune"]):
        proc = sk(root, *args)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    assert sk(root, "--json", "layer", "ls").stdout.strip() == "[]"
    assert thin.daemon_pid(pool) is None
    assert not [m for m in open("/proc/self/mountinfo") if str(root) in m]
    assert not loopdev.loops_backed_by(str(pool / "dev"))
    assert not loopdev.dead_thin_loops()
