"""`storagekit snapshotter config` and `serve`'s refusals: one line, exit status 1."""

from __future__ import annotations

import socket
import subprocess
import tomllib

import pytest
from cliutil import command


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([command(), *args], capture_output=True, text=True, timeout=120)


def test_config_is_containerd_toml(tmp_path):
    r = _run("--root", str(tmp_path / "s"), "--driver", "vfs", "snapshotter", "config",
             "--socket", str(tmp_path / "x.sock"))
    assert r.returncode == 0, r.stderr
    conf = tomllib.loads(r.stdout)
    assert conf["proxy_plugins"]["storagekit-vfs"] == {"type": "snapshot",
                                                       "address": str(tmp_path / "x.sock")}
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert cri == {"snapshotter": "storagekit-vfs"}
    assert not (tmp_path / "s").exists()  # config writes nothing


def test_serve_refuses_a_live_socket(server, tmp_path):
    r = _run("--root", str(tmp_path / "s"), "--driver", server.driver, "snapshotter", "serve",
             "--socket", server.socket)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "another process is serving" in r.stderr
    with server.client() as c:
        c.list()  # the server that has it still serves


def test_serve_refuses_a_driver_it_does_not_serve_yet(tmp_path):
    """btrfs is a storagekit driver the snapshotter does not serve yet: a one-line refusal,
    whether named with --driver or recorded in the store, and nothing left mounted."""
    from storagekit import registry
    from storagekit.snapshotter.command import SERVED_DRIVERS

    unserved = sorted(set(registry.available()) - set(SERVED_DRIVERS))
    if not unserved:
        pytest.skip("every driver registered here is served")
    for driver in unserved:
        root = tmp_path / driver
        r = _run("--root", str(root), "--driver", driver, "snapshotter", "serve",
                 "--socket", str(tmp_path / "s.sock"))
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"does not serve the {driver} driver yet" in r.stderr
        assert not root.exists()
        made = _run("--root", str(root), "--driver", driver, "layer", "create", "x")
        assert made.returncode == 0, made.stderr
        _run("--root", str(root), "prune")
        r = _run("--root", str(root), "snapshotter", "serve", "--socket", str(tmp_path / "s.sock"))
        assert r.returncode == 1 and f"does not serve the {driver} driver yet" in r.stderr
        with open("/proc/self/mountinfo") as f:
            assert str(root) not in f.read()
        assert not (tmp_path / "s.sock").exists()


def test_serve_refuses_what_is_not_a_socket(tmp_path):
    (tmp_path / "file").write_text("x")
    r = _run("--root", str(tmp_path / "s"), "--driver", "vfs", "snapshotter", "serve",
             "--socket", str(tmp_path / "file"))
    assert r.returncode == 1 and "is not a socket" in r.stderr and r.stderr.count("\n") == 1
    assert (tmp_path / "file").read_text() == "x"


def test_serve_replaces_a_stale_socket(tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # bound, nobody listening: what a killed server leaves
    proc = subprocess.Popen([command(), "--root", str(tmp_path / "s"), "--driver", "vfs",
                             "snapshotter", "serve", "--socket", str(tmp_path / "stale.sock")],
                            stderr=subprocess.PIPE, text=True)
    try:
        from snapclient import SnapClient

        with SnapClient(str(tmp_path / "stale.sock")) as c:
            import grpc

            grpc.channel_ready_future(c.channel).result(timeout=60)
            assert c.list() == []
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    assert not (tmp_path / "stale.sock").exists()


def test_serve_with_an_unknown_driver(tmp_path):
    r = _run("--root", str(tmp_path / "s"), "--driver", "nosuch", "snapshotter", "serve",
             "--socket", str(tmp_path / "x.sock"))
    assert r.returncode == 1 and "no storage driver named 'nosuch'" in r.stderr
    assert not (tmp_path / "x.sock").exists()


def test_the_systemd_unit_starts_a_server(tmp_path):
    """The unit's ExecStart, with the command, root and socket moved into the test's
    directory: the server it starts serves, and SIGTERM (the unit's KillSignal) stops it."""
    import configparser
    import shlex
    from pathlib import Path

    import grpc
    from snapclient import SnapClient

    unit = Path(__file__).resolve().parents[2] / "contrib/systemd/storagekit-snapshotter@.service"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(unit.read_text())
    assert parser["Service"]["KillSignal"] == "SIGTERM"
    argv = shlex.split(parser["Service"]["ExecStart"].replace("%i", "vfs"))
    assert argv[0] == "/usr/local/bin/storagekit"
    argv[0] = command()
    argv[argv.index("--root") + 1] = str(tmp_path / "store")
    sock = str(tmp_path / "snapshotter-vfs.sock")
    argv[argv.index("--socket") + 1] = sock
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        with SnapClient(sock) as c:
            grpc.channel_ready_future(c.channel).result(timeout=60)
            c.prepare("k")
            assert c.names() == ["k"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_config_names_the_stores_own_driver(tmp_path):
    """Without --driver: the driver the store was made with, else the one serve would pick."""
    from storagekit import registry

    r = _run("--root", str(tmp_path / "new"), "snapshotter", "config")
    best = registry.best(str(tmp_path / "new"))
    assert r.returncode == 0 and f"[proxy_plugins.storagekit-{best}]" in r.stdout
    assert f"/run/storagekit/snapshotter-{best}.sock" in r.stdout
    (tmp_path / "s").mkdir()  # `layer ls` makes a store in an existing directory only
    made = _run("--root", str(tmp_path / "s"), "--driver", "vfs", "layer", "ls")
    assert made.returncode == 0, made.stderr
    r = _run("--root", str(tmp_path / "s"), "snapshotter", "config")
    assert r.returncode == 0 and "[proxy_plugins.storagekit-vfs]" in r.stdout
