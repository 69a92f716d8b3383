"""The engine's process: start/stop, a daemon that dies, errors, signals, passthrough."""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from unionutil import daemons_under

from storagekit import _native as n
from storagekit.engines import union

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root")


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Has the whole process exited (every thread, so its files are closed)?"""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    rw, lower, mnt = tmp_path / "rw", tmp_path / "lower", tmp_path / "mnt"
    for d in (rw, lower, mnt):
        d.mkdir()
    (lower / "file").write_bytes(b"lower data" * 100_000)
    yield rw, lower, mnt
    if mounted(mnt):
        n.umount_tree(str(mnt), detach=True)


def requests(log: Path) -> dict[int, int]:
    """Requests the daemon served by opcode, from the line it logs when it is done."""
    m = re.search(r"requests by opcode: (.*)", log.read_text())
    assert m, log.read_text()
    return {int(k): int(v) for k, v in (x.split("=") for x in m.group(1).split())}


def test_start_and_stop_leave_nothing(dirs) -> None:
    rw, lower, mnt = dirs
    pid = union.start(mnt, [rw, lower])
    info = n.find_mount(str(mnt))
    assert info["target"] == str(mnt) and info["fstype"] == "fuse.storagekit"
    assert "allow_other" in info["options"] and "default_permissions" in info["options"]
    assert union.daemon_pids(mnt) == [pid]
    fuse_fds = [
        fd
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse"
    ]
    assert len(fuse_fds) == 4  # one cloned /dev/fuse per worker thread
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().split(")")[-1].split()[1]) != os.getpid()  # not our child
    assert (mnt / "file").read_bytes()[:10] == b"lower data"
    union.stop(mnt)
    assert not mounted(mnt)
    assert gone(pid)
    assert union.daemon_pids(mnt) == []
    union.stop(mnt)  # nothing left to do: no error


def test_killed_daemon_leaves_a_dead_mount_that_stop_cleans(dirs) -> None:
    rw, lower, mnt = dirs
    pid = union.start(mnt, [rw, lower])
    (mnt / "kept").write_bytes(b"written before the crash")
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert union.is_dead(mnt)
    with pytest.raises(OSError) as e:
        os.listdir(mnt)
    assert e.value.errno == errno.ENOTCONN
    union.stop(mnt)
    assert not mounted(mnt) and not union.is_dead(mnt)
    pid2 = union.start(mnt, [rw, lower])  # a new engine on the same mount point
    assert pid2 != pid
    assert (mnt / "kept").read_bytes() == b"written before the crash"
    assert (mnt / "file").exists()
    union.stop(mnt)
    assert gone(pid2)


def test_dead_mount_is_cleaned_by_umount_tree(dirs) -> None:
    rw, lower, mnt = dirs
    pid = union.start(mnt, [rw, lower])
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert n.umount_tree(str(mnt), detach=True) == 1
    assert not mounted(mnt)


def test_start_errors(dirs, tmp_path: Path) -> None:
    rw, lower, mnt = dirs
    with pytest.raises(union.UnionError) as e:
        union.start(mnt, [rw, tmp_path / "missing"])
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        union.start(tmp_path / "no-mountpoint", [rw, lower])
    assert e.value.errno == errno.ENOENT
    with pytest.raises(ValueError):
        union.start(mnt, [])
    assert not mounted(mnt)
    time.sleep(0.1)
    assert not daemons_under(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signal_unmounts_and_exits(dirs, tmp_path: Path, sig: int) -> None:
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    pid = union.start(mnt, [rw, lower], log=log)
    os.kill(pid, sig)
    assert gone(pid)
    assert not mounted(mnt)
    assert "done" in log.read_text()


def test_signals_while_a_file_is_open(dirs, tmp_path: Path) -> None:
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    pid = union.start(mnt, [rw, lower], log=log)
    f = open(mnt / "file", "rb")  # noqa: SIM115
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not mounted(mnt)
    os.kill(pid, signal.SIGTERM)  # a second one changes nothing: it serves the open file
    assert not gone(pid, 0.2)
    assert f.read(10) == b"lower data"
    f.close()
    assert gone(pid)
    assert "done" in log.read_text()


def test_listing_gives_attributes(dirs, tmp_path: Path) -> None:
    """A listing answers with each entry's attributes (readdirplus): stat of every listed
    file then needs no lookup, even past the first reply."""
    rw, lower, mnt = dirs
    for i in range(2000):
        (lower / f"entry-with-a-long-name-{i:05d}").write_bytes(b"")
    log = tmp_path / "log"
    union.start(mnt, [rw, lower], log=log)
    with os.scandir(mnt) as it:
        names = [e.name for e in it]
    for name in names:
        os.lstat(mnt / name)
    union.stop(mnt)
    assert len(names) == 2001
    assert requests(log).get(1, 0) == 0  # LOOKUP


def test_stop_waits_for_files_still_open(dirs, tmp_path: Path) -> None:
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    pid = union.start(mnt, [rw, lower], log=log)
    f = open(mnt / "file", "rb")  # noqa: SIM115
    stopper = threading.Thread(target=union.stop, args=(mnt,), kwargs={"timeout": 30})
    stopper.start()
    deadline = time.monotonic() + 10
    while mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not mounted(mnt)  # detached at once...
    assert f.read(10) == b"lower data"  # ...while the open file keeps working
    assert stopper.is_alive()
    f.close()
    stopper.join(30)
    assert not stopper.is_alive() and gone(pid)
    assert "done" in log.read_text()  # it exited by itself, not killed


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "daemon-io"])
def test_passthrough_reads_bypass_the_daemon(dirs, tmp_path: Path, passthrough: bool) -> None:
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    union.start(mnt, [rw, lower], log=log, passthrough=passthrough)
    assert union.daemon_info(mnt).passthrough is passthrough
    assert (mnt / "file").read_bytes() == (lower / "file").read_bytes()
    with open(mnt / "new", "wb") as f:
        f.write(b"x" * 100_000)
    union.stop(mnt)
    served = requests(log)
    read_ops, write_ops = served.get(15, 0), served.get(16, 0)
    if passthrough:
        assert read_ops == 0 and write_ops == 0
    else:
        assert read_ops > 0 and write_ops > 0


def test_daemon_exits_when_its_mount_is_unmounted(dirs, tmp_path: Path) -> None:
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    pid = union.start(mnt, [rw, lower], log=log)
    n.umount(str(mnt))  # by someone else, as umount(8) would
    assert gone(pid)
    assert "done" in log.read_text()


def test_the_daemon_is_the_engine_program(dirs, tmp_path: Path) -> None:
    """A daemon starts for every union mount (every container boot on aufs): it is a
    program (storagekit-uniond), not an interpreter that would import and load the
    extension first (~30 ms of a ~50 ms boot). `python3 -m storagekit.engines.union` is the same
    program."""
    rw, lower, mnt = dirs
    pid = union.start(mnt, [rw, lower])
    assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(union.PROGRAM)
    assert (mnt / "file").read_bytes()[:10] == b"lower data"
    union.stop(mnt)
    assert gone(pid)
    helps = [subprocess.run(argv, capture_output=True, text=True)
             for argv in ([union.PROGRAM, "--help"],
                          [sys.executable, "-m", "storagekit.engines.union", "--help"])]
    assert all(h.returncode == 0 and h.stdout.startswith("usage: storagekit-uniond")
               for h in helps), helps
    bad = subprocess.run([union.PROGRAM, "--threads", "x", "--", str(mnt), str(rw)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_daemonize_returns_once_the_mount_serves(dirs, tmp_path: Path) -> None:
    """`storagekit-uniond --daemonize` run by hand (no --ready-fd): the command returns once
    the mount answers, so the very next command finds the lower entry, round after round."""
    rw, lower, mnt = dirs
    log = tmp_path / "log"
    failures = []
    for i in range(30):
        with open(log, "ab") as err:
            started = subprocess.run([union.PROGRAM, "--daemonize", "--", str(mnt), str(rw),
                                      str(lower)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err)
        assert started.returncode == 0, log.read_text()
        if subprocess.run(["test", "-e", str(mnt / "file")]).returncode != 0:
            failures.append(i)
        pids = union.daemon_pids(mnt)
        union.stop(mnt)
        assert not mounted(mnt) and all(gone(p) for p in pids)
    assert failures == []


def test_daemonize_says_why_the_mount_failed(dirs, tmp_path: Path) -> None:
    rw, lower, mnt = dirs
    missing = tmp_path / "missing"
    started = subprocess.run([union.PROGRAM, "--daemonize", "--", str(mnt), str(rw),
                              str(missing)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             timeout=30)
    assert started.returncode == 1
    lines = started.stderr.splitlines()
    assert any(line == f"storagekit-uniond: {missing}: No such file or directory"
               for line in lines), lines
    assert not mounted(mnt)
    time.sleep(0.1)
    assert not daemons_under(tmp_path)
