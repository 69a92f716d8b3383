"""The server stops cleanly on SIGTERM and loses nothing (the store holds every snapshot); a
server killed with -9 in the middle of Prepares leaves nothing half made once restarted."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading

import grpc
from serverutil import mounted
from snapclient import SnapClient


def _snapshot(c: SnapClient) -> dict:
    return {i.name: (i.kind, i.parent, dict(i.labels), i.created_at.ToNanoseconds(),
                     i.updated_at.ToNanoseconds()) for i in c.list()}


def test_sigterm_and_restart_keep_everything(server, client, tmp_path):
    with mounted(client.prepare("k", labels={"a": "1"}), tmp_path / "m") as root:
        (root / "f").write_text("kept\n")
    client.commit("base", "k", labels={"b": "2"})
    mounts = client.prepare("active", "base", labels={"c": "3"})
    client.view("view", "base")
    before = _snapshot(client)
    assert server.stop(signal.SIGTERM) == 0
    assert not os.path.exists(server.socket)  # removed on the way out
    server.start()
    c = server.client(client.namespace)
    assert _snapshot(c) == before
    # the same mounts (devicemapper: the same device, active as long as the snapshot is)
    assert c.mounts("active") == mounts
    with mounted(c.mounts("active"), tmp_path / "a") as root:
        assert (root / "f").read_text() == "kept\n"
    c.close()


def _store_rows(server) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{server.store}/store.db?mode=ro", uri=True)
    try:
        return db.execute("SELECT id, state FROM layers").fetchall()
    finally:
        db.close()


def test_kill_9_in_the_middle_of_prepares(server, client, tmp_path):
    client.prepare("k")
    client.commit("base", "k")
    stop = threading.Event()
    made: list[str] = []

    def prepare_many(worker: int) -> None:
        c = server.client(client.namespace)
        try:
            for i in range(10000):
                if stop.is_set():
                    return
                c.prepare(f"w{worker}-{i}", "base")
                made.append(f"w{worker}-{i}")
        except grpc.RpcError:
            return  # the server went
        finally:
            c.close()

    workers = [threading.Thread(target=prepare_many, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    while len(made) < 8:
        threading.Event().wait(0.01)
    server.stop(signal.SIGKILL)
    stop.set()
    for w in workers:
        w.join()
    server.start()
    c = server.client(client.namespace)
    names = set(c.names())
    assert set(made) <= names  # every Prepare that answered is there
    # nothing half made: every layer of the store is complete, and each is usable
    rows = _store_rows(server)
    assert all(state == "ready" for _, state in rows)
    layer_dirs = {"vfs": "dir", "overlay": "layers", "aufs": "diff"}.get(server.driver)
    if layer_dirs is not None:  # and no directory of a layer the store does not have
        home = server.store / server.driver / layer_dirs
        entries = os.listdir(home)
        assert {n for n in entries if not n.startswith(".")} <= {i for i, _ in rows}
        assert not [n for n in entries if n.startswith((".partial-", ".removing-"))]
    for name in sorted(names - {"base"})[:3] + sorted(names - set(made) - {"base"}):
        with mounted(c.mounts(name), tmp_path / "m") as root:
            assert root.is_dir()
    c.close()
