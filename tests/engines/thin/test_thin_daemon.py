"""The daemon's life: started by activate, serving messages while it holds the pool, refusing
what would break an active device, gone with its last device, cleaning up after itself on
SIGTERM and after a predecessor killed with SIGKILL in the middle of writes."""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import threading

import pytest
from pooldaemon import MIB, fresh_pool, process_gone, wait_gone
from thinmeta import reseal_superblock

from storagekit._native import ThinPool
from storagekit.engines import thin
from storagekit.engines.thin import loopdev
from storagekit.engines.thin.layout import PoolDir
from storagekit.engines.thin.stale import fuse_mounts
from storagekit.errors import InvalidArgument

BS = 64 << 10


@pytest.fixture
def pool_dir(tmp_path):
    yield from fresh_pool(tmp_path)


def leftovers(d) -> tuple[list[str], dict[str, str]]:
    pd = PoolDir.at(d)
    return fuse_mounts(pd), loopdev.loops_backed_by(str(pd.mountpoint))


def test_without_a_daemon_the_client_opens_the_pool_itself(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    thin.message(pool_dir, "create_snap 2 1")
    thin.message(pool_dir, "set_transaction_id 0 5")
    status = thin.status(pool_dir)
    assert status["daemon"] is None
    assert status["transaction_id"] == 5
    assert [d["id"] for d in status["thin_devices"]] == [1, 2]
    assert status["line"].split()[0] == "5"
    assert thin.active(pool_dir) == {}
    assert thin.daemon_pid(pool_dir) is None
    with pytest.raises(thin.DeviceNotActive):
        thin.deactivate(pool_dir, 1)
    # Nothing holds the pool between calls.
    ThinPool.open(pool_dir / "metadata", pool_dir / "data").close()


def test_the_daemon_serves_messages_and_exits_with_its_last_device(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    loop1 = thin.activate(pool_dir, 1, "64M")
    pid = thin.daemon_pid(pool_dir)
    assert pid and os.path.exists(f"/proc/{pid}")
    assert thin.activate(pool_dir, 1, "64M") == loop1  # already active: the same device
    with pytest.raises(thin.DeviceBusy, match="active with size"):
        thin.activate(pool_dir, 1, "128M")
    # Messages now go through the daemon (the pool is locked by it).
    with pytest.raises(OSError) as e:
        ThinPool.open(pool_dir / "metadata", pool_dir / "data")
    assert e.value.errno == errno.EBUSY
    thin.message(pool_dir, "create_thin 2")
    loop2 = thin.activate(pool_dir, 2, "32M")
    assert thin.active(pool_dir) == {1: loop1, 2: loop2}
    assert thin.status(pool_dir)["daemon"] == pid

    with pytest.raises(thin.DeviceBusy, match="deactivate it first"):
        thin.message(pool_dir, "delete 1")
    with pytest.raises(thin.PoolBusy, match="at rest"):
        thin.check(pool_dir)

    thin.deactivate(pool_dir, 1)
    assert thin.daemon_pid(pool_dir) == pid  # still one device
    assert loopdev.backing_file(loop1) is None
    thin.deactivate(pool_dir, 2)
    assert thin.daemon_pid(pool_dir) is None
    assert process_gone(pid)
    assert leftovers(pool_dir) == ([], {})
    thin.message(pool_dir, "delete 1")  # in this process again
    assert [d["id"] for d in thin.status(pool_dir)["thin_devices"]] == [2]
    thin.check(pool_dir)


def test_activate_errors_leave_no_daemon(pool_dir):
    with pytest.raises(thin.DeviceNotFound):
        thin.activate(pool_dir, 9, "64M")
    with pytest.raises(InvalidArgument, match="no recorded size"):
        thin.activate(pool_dir, 9)
    thin.message(pool_dir, "create_thin 9")
    with pytest.raises(InvalidArgument, match="multiple of 512"):
        thin.activate(pool_dir, 9, 1000)
    assert thin.daemon_pid(pool_dir) is None
    assert leftovers(pool_dir) == ([], {})


def test_mounted_device_cannot_be_deactivated(pool_dir, tmp_path):
    thin.message(pool_dir, "create_thin 1")
    loop = thin.activate(pool_dir, 1, "64M")
    subprocess.run(["mkfs.ext4", "-q", loop], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", loop, str(mnt)], check=True)
    try:
        with pytest.raises(thin.DeviceBusy, match="mounted on"):
            thin.deactivate(pool_dir, 1)
        with pytest.raises(thin.DeviceBusy):
            thin.stop(pool_dir)
        assert thin.active(pool_dir) == {1: loop}
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert thin.stop(pool_dir) is True
    assert leftovers(pool_dir) == ([], {})


def test_sigterm_detaches_and_unmounts(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    thin.message(pool_dir, "create_thin 2")
    loop = thin.activate(pool_dir, 1, "64M")
    thin.activate(pool_dir, 2, "64M")
    with open(loop, "r+b", buffering=0) as f:
        f.write(b"committed on exit" * 100)
        # no fsync: the daemon commits when it stops
    pid = thin.daemon_pid(pool_dir)
    os.kill(pid, signal.SIGTERM)
    wait_gone(pool_dir)
    assert process_gone(pid)
    assert leftovers(pool_dir) == ([], {})
    thin.check(pool_dir)
    with ThinPool.open(pool_dir / "metadata", pool_dir / "data") as pool:
        assert pool.read(1, 0, 1700) == b"committed on exit" * 100


def test_a_loop_device_detached_behind_its_back_ends_the_daemon(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    loop = thin.activate(pool_dir, 1, "64M")
    pid = thin.daemon_pid(pool_dir)
    subprocess.run(["losetup", "-d", loop], check=True)
    wait_gone(pool_dir)
    assert process_gone(pid)
    assert leftovers(pool_dir) == ([], {})


def _aligned(n: int) -> mmap.mmap:
    return mmap.mmap(-1, n)  # page aligned, as O_DIRECT wants


def test_sigkill_during_writes_then_restart(pool_dir):
    """Writes through the loop device, an fsync after each; the daemon is killed in the
    middle. The dead mount and loop device stay until the next start, which removes them;
    thin_check passes and every fsync-ed write is there."""
    thin.message(pool_dir, "create_thin 1")
    loop = thin.activate(pool_dir, 1, "256M")
    pid = thin.daemon_pid(pool_dir)
    synced: list[int] = []  # block indexes whose write and fsync both returned
    error: list[OSError] = []
    enough = threading.Event()

    def writer():
        buf = _aligned(BS)
        fd = os.open(loop, os.O_RDWR | os.O_DIRECT)
        try:
            for i in range(256 * MIB // BS):
                buf[:] = i.to_bytes(8, "little") * (BS // 8)
                os.pwrite(fd, buf, i * BS)
                os.fsync(fd)
                synced.append(i)
                if i == 200:
                    enough.set()
        except OSError as e:
            error.append(e)
        finally:
            enough.set()
            os.close(fd)

    t = threading.Thread(target=writer)
    t.start()
    assert enough.wait(60)
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    assert error, "the writes went on without the daemon"
    assert process_gone(pid)

    mounts, loops = leftovers(pool_dir)
    assert mounts and loop in loops  # what a killed daemon leaves

    # The next start cleans up before serving.
    loop = thin.activate(pool_dir, 1)
    mounts, loops = leftovers(pool_dir)
    assert len(mounts) == 1 and list(loops) == [loop]
    fd = os.open(loop, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = _aligned(BS)
        for i in synced:
            os.preadv(fd, [buf], i * BS)
            assert bytes(buf[:8]) == i.to_bytes(8, "little"), f"block {i} lost"
    finally:
        os.close(fd)
    thin.deactivate(pool_dir, 1)
    assert leftovers(pool_dir) == ([], {})
    thin.check(pool_dir)


def test_check_after_sigkill_cleans_up_first(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    thin.activate(pool_dir, 1, "64M")
    pid = thin.daemon_pid(pool_dir)
    os.kill(pid, signal.SIGKILL)
    assert process_gone(pid)
    assert leftovers(pool_dir) != ([], {})
    assert "examining" in thin.check(pool_dir)
    assert leftovers(pool_dir) == ([], {})


def test_concurrent_clients_share_one_daemon(pool_dir):
    for i in range(1, 5):
        thin.message(pool_dir, f"create_thin {i}")
    loops: dict[int, str] = {}
    errors: list[Exception] = []

    def run(fn):
        threads = [threading.Thread(target=fn, args=(i,)) for i in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors

    def activate(i):
        try:
            loops[i] = thin.activate(pool_dir, i, "16M")
        except Exception as e:
            errors.append(e)

    run(activate)  # started by whichever came first; the others joined it
    assert thin.active(pool_dir) == loops and len(set(loops.values())) == 4

    def deactivate(i):
        try:
            thin.deactivate(pool_dir, i)
        except Exception as e:
            errors.append(e)

    run(deactivate)
    assert thin.daemon_pid(pool_dir) is None
    assert leftovers(pool_dir) == ([], {})


def test_activations_racing_the_daemons_exit(pool_dir):
    """One client keeps deactivating its last device (the daemon exits) while another
    activates: the second waits for the exiting daemon and starts a new one."""
    thin.message(pool_dir, "create_thin 1")
    thin.message(pool_dir, "create_thin 2")
    errors: list[Exception] = []
    pids: set[int] = set()

    def cycle(i):
        try:
            for _ in range(4):
                thin.activate(pool_dir, i, "16M")
                pid = thin.daemon_pid(pool_dir)
                if pid:
                    pids.add(pid)
                thin.deactivate(pool_dir, i)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=cycle, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert len(pids) >= 2  # daemons came and went
    assert thin.daemon_pid(pool_dir) is None
    assert leftovers(pool_dir) == ([], {})
    thin.check(pool_dir)


def test_a_pool_that_needs_a_check_makes_read_only_devices(pool_dir):
    thin.message(pool_dir, "create_thin 1")
    with ThinPool.open(pool_dir / "metadata", pool_dir / "data") as pool:
        pool.write(1, 0, b"kept")
    reseal_superblock(pool_dir / "metadata", flags_or=1)  # needs_check
    status = thin.status(pool_dir)
    assert status["needs_check"] and status["mode"] == "ro"
    with pytest.raises(thin.PoolReadOnly, match="storagekit thin check"):
        thin.message(pool_dir, "create_thin 2")
    loop = thin.activate(pool_dir, 1, "16M")
    assert open(f"/sys/block/{loop[5:]}/ro").read().strip() == "1"
    with open(loop, "rb") as f:
        assert f.read(4) == b"kept"
    fd = os.open(loop, os.O_WRONLY)
    try:  # a read-only block device: writes are refused
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x" * 512, 0)
        assert e.value.errno == errno.EPERM
    finally:
        os.close(fd)
    thin.deactivate(pool_dir, 1)
    thin.check(pool_dir, clear_needs_check=True)
    assert thin.status(pool_dir)["mode"] == "rw"
    thin.message(pool_dir, "create_thin 2")


def test_the_daemon_starts_lean_and_is_gone_when_deactivate_returns(pool_dir, monkeypatch):
    """The daemon starts with a pool's first activation (every container boot on
    devicemapper): it imports neither the client's modules nor dataclasses (~20 ms before
    they went). The last deactivation returns once the daemon has exited."""
    thin.message(pool_dir, "create_thin 1")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the daemon's imports, in its log
    thin.activate(pool_dir, 1, "64M")
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    pid = thin.daemon_pid(pool_dir)
    thin.deactivate(pool_dir, 1)
    try:  # exited already: reaped, or a zombie waiting for its reaper
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        pass
    log = PoolDir.at(pool_dir).log.read_text()
    imported = {line.split("|")[-1].strip() for line in log.splitlines()
                if line.startswith("import time:")}
    assert "storagekit.engines.thin.engine" in imported
    assert not imported & {"storagekit.engines.thin.client", "subprocess", "shutil", "dataclasses",
                           "inspect", "typing"}
