"""The plugin as a process: how it starts (and refuses to), what SIGTERM leaves, what a
restart keeps, and a layer far larger than its memory going through it both ways."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from cliutil import command
from dockerutil import DRIVER_OPTIONS, Plugin, mounts_under
from graphclient import PluginError

GIB = 1 << 30


def new_id() -> str:
    return secrets.token_hex(32)


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_sigterm_keeps_the_mounts_dockerd_holds(graph):
    c = graph.client
    base, rw = new_id(), new_id()
    c.create(base)
    c.create(rw, base, rw=True)
    path = c.get(rw)
    with open(f"{path}/kept", "w") as f:
        f.write("while the plugin was away")
    mounted = mounts_under(graph.store)

    assert graph.plugin.stop(signal.SIGTERM) == 0
    assert not os.path.exists(graph.plugin.socket)
    # What dockerd got stays: a running container keeps its root filesystem.
    assert mounts_under(graph.store) == mounted
    with open(f"{path}/kept") as f:
        assert f.read() == "while the plugin was away"

    graph.plugin.start()  # no Init: a plugin restarted under a running dockerd
    assert c.get(rw) == path  # the count went on where it was: two gets now
    c.put(rw)
    c.put(rw)
    assert ("/kept", 1) in c.changes(rw, base)
    c.remove(rw)
    c.remove(base)
    assert not [m for m in mounts_under(graph.store) if rw in m]


def test_a_diff_abandoned_half_way_puts_its_mounts_back(graph):
    """The client reads a little of a Diff and hangs up: the export stops, what it mounted
    for it is released, and the layer can go."""
    c = graph.client
    base, child = new_id(), new_id()
    c.create(base)
    c.create(child, base)
    path = c.get(child)
    with open(f"{path}/big", "wb") as f:
        f.write(os.urandom(32 << 20))  # far more than the pipe and the socket buffer
    c.put(child)
    stream = c.diff_stream(child)  # against no parent: the whole tree, through a mount
    assert next(stream)
    stream.close()  # hangs up
    deadline = time.monotonic() + 60
    while True:
        try:
            c.remove(child)
            break
        except PluginError as e:
            assert e.status == 409, e  # in use until the export has stopped
            assert time.monotonic() < deadline, e
            time.sleep(0.1)
    c.remove(base)
    assert not [m for m in mounts_under(graph.store) if child in m]
    assert c.activate() == ["GraphDriver"]


def chunks_of_tar(members: list[tuple[str, bytes]], gate: threading.Event | None = None):
    """A tar stream, yielded in pieces; with a gate, it stops half way until the gate opens."""
    for i, (name, data) in enumerate(members):
        if gate is not None and i == len(members) // 2:
            gate.wait(60)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield data + b"\0" * (-len(data) % 512)
    yield b"\0" * 1024


def test_sigterm_lets_an_apply_in_progress_finish(vfs_plugin):
    env = vfs_plugin
    c = env.client
    lid = new_id()
    c.create(lid)
    gate = threading.Event()
    members = [(f"file-{i}", os.urandom(4096)) for i in range(20)]
    result: list[object] = []

    def apply() -> None:
        try:
            result.append(c.apply_diff(lid, "", chunks_of_tar(members, gate)))
        except Exception as e:  # reported below
            result.append(e)

    sender = threading.Thread(target=apply)
    sender.start()
    time.sleep(0.5)  # the request is in, half its body sent
    pid = env.plugin.pid
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert env.plugin.proc.poll() is None, "the plugin quit with a request in progress"
    # It no longer listens: a new client finds nobody.
    with pytest.raises(OSError):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(env.plugin.socket)
        finally:
            s.close()
    gate.set()
    sender.join(60)
    assert result == [20 * 4096], result
    assert env.plugin.stop() == 0

    env.plugin.start()
    assert c.exists(lid)
    path = c.get(lid)
    assert sorted(os.listdir(path)) == sorted(name for name, _ in members)
    c.put(lid)
    c.remove(lid)


def test_restart_keeps_the_options_dockerd_gave(tmp_path):
    plugin = Plugin(tmp_path / "store", "vfs", tmp_path / "plugin.log")
    plugin.start()
    try:
        plugin.client.init(str(tmp_path / "home"), ["vfs.reflink=false"])
        assert dict(plugin.client.status())["Driver options"] == "vfs.reflink=false"
        assert plugin.stop() == 0
        plugin.start()  # no Init
        status = dict(plugin.client.status())
        assert status["Driver options"] == "vfs.reflink=false"
        assert status["Layer data sharing"] == "full copy"
        assert status["Docker home"] == str(tmp_path / "home")
    finally:
        if plugin.proc is not None:
            assert plugin.stop() == 0


def test_a_new_store_is_made_with_dockerds_options(tmp_path):
    """A new devicemapper store waits for Init: its pool is made as dockerd's --storage-opt
    say, not with the defaults the plugin started with."""
    plugin = Plugin(tmp_path / "store", "devicemapper", tmp_path / "plugin.log")
    plugin.start()
    try:
        assert not (tmp_path / "store" / "store.db").exists()
        plugin.client.init(str(tmp_path / "home"),
                           ["dm.basesize=1G", *DRIVER_OPTIONS["devicemapper"][1:]])
        status = dict(plugin.client.status())
        assert status["Base Device Size"] == "1.074GB"
        lid = new_id()
        plugin.client.create(lid)
        path = plugin.client.get(lid)
        st = os.statvfs(path)
        assert st.f_blocks * st.f_frsize < GIB  # the layer's filesystem is 1 GiB, not 10
        plugin.client.put(lid)
        plugin.client.remove(lid)
        plugin.client.cleanup()
    finally:
        if plugin.proc is not None:
            assert plugin.stop() == 0
    assert not mounts_under(tmp_path)


def serve(*args: str) -> subprocess.CompletedProcess:
    """`python -m storagekit.dockerplugin ARGS` (the `serve` of ARGS as the command's
    `docker-plugin serve`: both run the same code, and both are checked)."""
    module = subprocess.run([sys.executable, "-m", "storagekit.dockerplugin", *args],
                            capture_output=True, text=True, timeout=60)
    i = args.index("serve") if "serve" in args else len(args)
    cli = subprocess.run([command(), *args[:i], "docker-plugin", *args[i:]],
                         capture_output=True, text=True, timeout=60)

    def message(proc: subprocess.CompletedProcess) -> str:  # without the program's name
        return proc.stderr.split(": ", 1)[-1]

    assert (cli.returncode, message(cli)) == (module.returncode, message(module)), (cli, module)
    return module


def test_bad_starts_are_one_line(tmp_path):
    root = ["--root", str(tmp_path / "store")]
    cases = [
        ([*root, "--driver", "nope", "serve"], "no storage driver named 'nope'"),
        ([*root, "--driver", "vfs", "-o", "overlay.volatile=1", "serve"], "unknown option"),
        ([*root, "--driver", "vfs", "-o", "novalue", "serve"], "KEY=VALUE"),
        ([*root, "--driver", "vfs", "serve", "--name", "../x"], "invalid plugin name"),
        ([*root, "--driver", "vfs", "serve", "--socket", str(tmp_path)], "not a socket"),
    ]
    for argv, says in cases:
        proc = serve(*argv)
        assert proc.returncode == 1, (argv, proc)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], (argv, proc.stderr)


def test_a_served_socket_is_not_taken_over(tmp_path, vfs_plugin):
    proc = serve("--root", str(tmp_path / "store"), "--driver", "vfs", "serve", "--socket",
                 vfs_plugin.plugin.socket)
    assert proc.returncode == 1 and "another process is serving" in proc.stderr, proc
    assert vfs_plugin.client.activate() == ["GraphDriver"]


def test_a_stale_socket_is_replaced(tmp_path):
    sock = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # bound, nobody listening: what a killed plugin leaves
    plugin = Plugin(tmp_path / "store", "vfs", tmp_path / "plugin.log", socket=str(sock))
    plugin.start()
    assert plugin.stop() == 0
    assert not sock.exists()


def big_file(size: int, block: bytes):
    left = size
    while left:
        n = min(left, len(block))
        yield block[:n]
        left -= n


def big_tar(size: int, block: bytes):
    info = tarfile.TarInfo("big")
    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    yield from big_file(size, block)
    yield b"\0" * (-size % 512 + 1024)


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of chunks, for tarfile's stream mode."""

    def __init__(self, chunks) -> None:
        self.chunks, self.rest = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.rest:
            self.rest = next(self.chunks, b"")
            if not self.rest:
                return 0
        n = min(len(buffer), len(self.rest))
        buffer[:n], self.rest = self.rest[:n], self.rest[n:]
        return n


@pytest.mark.slow
def test_a_2gib_layer_goes_through_in_constant_memory(vfs_plugin):
    c = vfs_plugin.client
    pid = vfs_plugin.plugin.pid
    base_rss = vm_kib(pid, "VmRSS")
    size = 2 * GIB
    block = os.urandom(1 << 20)
    lid = new_id()
    c.create(lid)
    assert c.apply_diff(lid, "", big_tar(size, block)) == size
    peak_after_apply = vm_kib(pid, "VmHWM")

    digest = hashlib.sha256()
    stream = ChunkReader(c.diff_stream(lid))
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        member = tar.next()
        assert member is not None and member.name == "big" and member.size == size
        data = tar.extractfile(member)
        while piece := data.read(1 << 20):
            digest.update(piece)
    while stream.read(1 << 20):  # to the end: the export is over (and its mount put back)
        pass
    peak = vm_kib(pid, "VmHWM")
    c.remove(lid)
    expected = hashlib.sha256()
    for piece in big_file(size, block):
        expected.update(piece)
    assert digest.hexdigest() == expected.hexdigest()
    # Pipes of 1 MiB and aiohttp's buffers: some MiB, never the layer.
    assert peak_after_apply - base_rss < 256 << 10, (base_rss, peak_after_apply)
    assert peak - base_rss < 256 << 10, (base_rss, peak)
