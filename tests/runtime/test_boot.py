"""A container boots on every driver: pid 1, its own hostname, none of the host's mounts;
the image stays unchanged and containers do not see each other's changes. Also exit codes,
signals, stdio, users, --rm on failure and interruption, and leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from treeutil import describe

from storagekit import registry
from storagekit.errors import ImageInUse, InvalidArgument
from storagekit.image import Images
from storagekit.runtime import Containers, RunSpec
from storagekit.store import Store

DRIVERS = sorted(registry.available())


@pytest.fixture(params=DRIVERS)
def env(request, tmp_path, busybox_tar):
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    root = tmp_path / "root"
    store = Store(root, request.param)
    Images(store).import_image(busybox_tar, name="busybox")
    yield store, Containers(store), root
    store.driver.cleanup()
    store.close()


def run(containers: Containers, tmp_path, *command: str, **kw) -> tuple[int, str]:
    out = tmp_path / f"out-{time.monotonic_ns()}"
    with open(out, "wb") as f:
        code = containers.run(RunSpec("busybox", list(command), stdout=f.fileno(),
                                      stderr=f.fileno(), **kw))
    return code, out.read_text()


def image_tree(store: Store) -> dict:
    top = Images(store).get("busybox").top_layer
    path = store.get(top)
    try:
        return describe(path)
    finally:
        store.put(top)


def test_boot_proof(env, tmp_path):
    store, containers, _ = env
    marker = tmp_path / "host-mount"
    marker.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "sk-host-marker", str(marker)], check=True)
    try:
        before = image_tree(store)
        script = (
            "echo pid=$$; hostname; echo hello > /root/written; rm /etc/group; "
            "test -e /etc/group && echo still-there; cat /proc/self/mountinfo; "
            "grep -c . /proc/self/mountinfo"
        )
        code, out = run(containers, tmp_path, "/bin/sh", "-c", script, name="first",
                        hostname="boot-proof")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0] == "pid=1"
        assert lines[1] == "boot-proof"
        assert "still-there" not in out
        assert "sk-host-marker" not in out
        mountinfo = lines[2:-1]
        assert len(mountinfo) == int(lines[-1]) <= 8  # /, /proc, /dev and submounts, /sys
        targets = [line.split()[4] for line in mountinfo]
        assert targets[0] == "/"
        assert all(t.startswith(("/proc", "/dev", "/sys")) for t in targets[1:]), targets
        # the first container's changes are in its own layer only
        assert image_tree(store) == before
        code, out = run(containers, tmp_path, "/bin/sh", "-c",
                        "ls /root/written 2>&1; test -e /etc/group && echo group-present")
        assert "group-present" in out and "No such file" in out
        first = containers.get("first")
        path = store.get(first.layer)
        try:
            assert open(os.path.join(path, "root/written")).read() == "hello\n"
            assert not os.path.exists(os.path.join(path, "etc/group"))
        finally:
            store.put(first.layer)
        changes = {(c.path, int(c.kind)) for c in store.changes(first.layer)}
        assert ("/root/written", 1) in changes and ("/etc/group", 2) in changes
        containers.remove("first")
    finally:
        subprocess.run(["umount", str(marker)], check=True)


def test_exit_codes_env_workdir_user(env, tmp_path):
    _, containers, _ = env
    assert run(containers, tmp_path, "/bin/sh", "-c", "exit 3", rm=True)[0] == 3
    code, out = run(containers, tmp_path, "/bin/sh", "-c", "echo $GREETING; pwd; id",
                    rm=True, env=["GREETING=hi"], workdir="/tmp", user="65534:65534")
    assert code == 0
    assert out.splitlines()[:2] == ["hi", "/tmp"]
    assert "uid=65534(nobody) gid=65534(nogroup)" in out
    code, out = run(containers, tmp_path, "id", rm=True, user="nobody")
    assert "uid=65534" in out and "gid=65534" in out
    with pytest.raises(InvalidArgument):
        run(containers, tmp_path, "id", rm=True, user="nosuchuser")
    code, out = run(containers, tmp_path, "id", "-u", rm=True, user_namespace=True)
    assert (code, out.strip()) == (0, "0")


def test_rm_even_when_the_command_fails(env, tmp_path):
    store, containers, _ = env
    layers_before = {layer.id for layer in store.layers()}
    with pytest.raises(FileNotFoundError, match="nosuchcommand"):
        run(containers, tmp_path, "nosuchcommand", rm=True)
    assert run(containers, tmp_path, "false", rm=True)[0] == 1
    assert {layer.id for layer in store.layers()} == layers_before
    assert containers.list() == []


def sk(root, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "storagekit", "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_running(root, name, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "storagekit", "--root", str(root), "--json",
                              "ps"], capture_output=True, text=True).stdout
        for c in json.loads(out or "[]"):
            if c["name"] == name and c["state"] == "running":
                return c
        time.sleep(0.05)
    raise AssertionError(f"container {name} never ran")


def test_a_rm_container_is_mounted_volatile_on_overlay(tmp_path, busybox_tar):
    """With --rm the container's layer goes when it exits, so overlay mounts it volatile
    (its umount then does not sync the whole backing filesystem); a kept one is synced."""
    ok, reason = registry.driver_class("overlay").probe(tmp_path)
    if not ok:
        pytest.skip(f"overlay: {reason}")
    store = Store(tmp_path / "root", "overlay")
    try:
        Images(store).import_image(busybox_tar, name="busybox")
        containers = Containers(store)
        root_mount = "grep ' / / ' /proc/self/mountinfo"

        def volatile(out: str) -> bool:  # newer kernels: fsync=volatile
            options = out.split(" - ")[1].split()[2].split(",")
            return "volatile" in options or "fsync=volatile" in options

        code, out = run(containers, tmp_path, "/bin/sh", "-c", root_mount, rm=True)
        assert code == 0 and volatile(out), out
        code, out = run(containers, tmp_path, "/bin/sh", "-c", root_mount, name="kept")
        assert code == 0 and not volatile(out), out
        containers.remove("kept")
    finally:
        store.driver.cleanup()
        store.close()


def test_cli_exit_status_killed_by_signal(env):
    store, _, root = env
    store.close()
    proc = sk(root, "run", "--rm", "--name", "victim", "busybox", "sleep", "100")
    c = wait_running(root, "victim")
    os.kill(c["pid"], signal.SIGKILL)
    proc.wait(timeout=20)
    assert proc.returncode == 128 + signal.SIGKILL


def test_ctrl_c_reaches_the_container(env):
    _, _, root = env
    script = 'trap "echo got-INT; exit 42" INT; while true; do sleep 0.1; done'
    proc = sk(root, "run", "--rm", "--name", "trapper", "busybox", "/bin/sh", "-c", script)
    wait_running(root, "trapper")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 42, err
    assert out.decode().strip() == "got-INT"


def test_second_ctrl_c_kills_a_container_that_ignores_it(env):
    _, _, root = env
    proc = sk(root, "run", "--rm", "--name", "deaf", "busybox", "sleep", "100")
    wait_running(root, "deaf")
    proc.send_signal(signal.SIGINT)  # sleep as pid 1 does not handle SIGINT
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert proc.returncode == 128 + signal.SIGKILL


def _host_processes(needle: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_no_process_survives(env, tmp_path):
    _, containers, _ = env
    code, _ = run(containers, tmp_path, "/bin/sh", "-c", "sleep 4321 & sleep 4322 & exit 0",
                  rm=True)
    assert code == 0
    time.sleep(0.2)
    assert _host_processes("4321") == [] and _host_processes("4322") == []


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_killed_runtime_leaves_nothing_once_reaped(env):
    store, _, root = env
    mounts_before = open("/proc/self/mounts").read().count(str(root))
    proc = sk(root, "run", "--rm", "--name", "orphan", "busybox", "sleep", "4323")
    c = wait_running(root, "orphan")
    proc.kill()  # SIGKILL: no cleanup in the runtime at all
    proc.wait()
    deadline = time.monotonic() + 10
    while not (_dead(c["pid"]) and _host_processes("4323") == []):  # died with its runtime
        assert time.monotonic() < deadline, "the container outlived its runtime"
        time.sleep(0.05)
    with Store(root) as s:
        assert Containers(s).list() == []  # reaped: --rm record and layer gone
        assert {layer.id for layer in s.layers()} == {layer.id for layer in store.layers()}
        assert not any(layer.id.startswith("ctr-") for layer in s.layers())
    assert open("/proc/self/mounts").read().count(str(root)) == mounts_before


def test_stdin_passthrough(env):
    _, _, root = env
    proc = subprocess.run([sys.executable, "-m", "storagekit", "--root", str(root), "run", "--rm",
                           "busybox", "tr", "a-z", "A-Z"], input=b"hello\n", capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"HELLO\n"


def test_image_removed_while_a_container_keeps_it(env, tmp_path):
    store, containers, _ = env
    images = Images(store)
    image_layers = images.layers(images.get("busybox"))
    assert run(containers, tmp_path, "true", name="keeper")[0] == 0
    with pytest.raises(ImageInUse, match="keeper"):  # Docker's conflict
        images.remove("busybox")
    assert images.remove("busybox", force=True) == []  # the container's layer sits on it
    assert all(store.exists(lid) for lid in image_layers)
    containers.remove("keeper")  # the last user goes: so do the image's layers
    assert store.layers() == []
