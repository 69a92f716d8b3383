"""The layer store: metadata, identity, kinds, rules, atomicity, locking across processes."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from treeutil import describe, make_tar

from storagekit.errors import (
    InvalidArchive,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StoreError,
)
from storagekit.store import Store, chain_id

ONE = make_tar([{"name": "a", "type": "dir"}, {"name": "a/one", "data": b"1" * 100}])
TWO = make_tar([{"name": "a", "type": "dir"}, {"name": "a/two", "data": b"2" * 50}])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", "vfs")
    yield s
    s.driver.cleanup()
    s.close()


def test_layers_with_identity(store):
    base = store.create("base", diff=io.BytesIO(ONE), name="the-base", labels={"k": "v"})
    assert base.diff_id == sha(ONE)
    assert base.chain_id == sha(ONE)  # a base layer's chain ID is its diff ID
    assert base.size == 100
    assert base.kind == "committed"
    assert base.labels == {"k": "v"}
    top = store.create("top", "base", diff=io.BytesIO(TWO))
    assert top.chain_id == chain_id(sha(ONE), sha(TWO))
    assert top.chain_id == "sha256:" + hashlib.sha256(f"{sha(ONE)} {sha(TWO)}".encode()).hexdigest()
    assert store.by_chain_id(top.chain_id).id == "top"
    assert store.layer("the-base").id == "base"
    assert [layer.id for layer in store.layers()] == ["base", "top"]
    assert store.children("base") == ["top"]
    with open(os.path.join(store.get("top"), "a/one"), "rb") as f:
        assert f.read() == b"1" * 100
    store.put("top")


def test_kinds_and_rules(store):
    store.create("base")
    rw = store.create("rw", "base", kind="active")
    assert rw.kind == "active"
    store.create("view", "base", kind="view")
    with pytest.raises(InvalidArgument, match="view"):
        store.create("x", "view")
    with pytest.raises(InvalidArgument):
        store.create("bad", kind="other")
    with pytest.raises(LayerExists):
        store.create("base")
    with pytest.raises(LayerNotFound):
        store.create("orphan", "missing")
    with pytest.raises(InvalidArgument):
        store.create("../evil")
    store.create("n1", name="dup")
    with pytest.raises(LayerExists):
        store.create("n2", name="dup")
    assert {layer.id for layer in store.layers(kind="active")} == {"rw"}


def test_remove_refuses_children_and_mounted(store):
    store.create("base")
    store.create("child", "base")
    with pytest.raises(LayerInUse, match="children"):
        store.remove("base")
    store.get("child")
    with pytest.raises(LayerInUse, match="mounted"):
        store.remove("child")
    store.put("child")
    store.remove("child")
    store.remove("base")
    assert store.layers() == []
    assert os.listdir(store.driver.home / "dir") == []
    with pytest.raises(LayerNotFound):
        store.remove("base")


def test_failed_create_leaves_nothing(store):
    store.create("base", diff=io.BytesIO(ONE))
    evil = make_tar([{"name": "../../escape", "data": b"x"}])
    with pytest.raises(InvalidArchive, match="was not created"):
        store.create("bad", "base", diff=io.BytesIO(evil))
    assert not store.exists("bad")
    assert not (store.driver.home / "dir" / "bad").exists()
    assert not any((store.root / "locks").iterdir())
    store.create("bad", "base")  # the id is free again


def test_failed_apply_removes_a_fresh_layer(store):
    store.create("l")
    truncated = make_tar([{"name": "big", "data": b"z" * 100_000}])[:20_000]
    with pytest.raises(InvalidArchive, match="was removed"):
        store.apply("l", io.BytesIO(truncated))
    assert not store.exists("l")
    assert not (store.driver.home / "dir" / "l").exists()


def test_failed_apply_keeps_the_content_of_a_layer(store):
    store.create("l", diff=io.BytesIO(ONE))
    before = store.layer("l")
    truncated = make_tar([{"name": "big", "data": b"z" * 100_000}])[:20_000]
    with pytest.raises(InvalidArchive, match="was left as it was"):
        store.apply("l", io.BytesIO(truncated))
    assert store.layer("l") == before
    assert not store.driver.exists("l.apply")


def test_second_apply_drops_single_diff_identity(store):
    store.create("l", diff=io.BytesIO(ONE))
    layer = store.apply("l", io.BytesIO(TWO))
    assert layer.diff_id is None and layer.chain_id is None
    assert layer.size == 150


def test_apply_refuses_layer_with_children_or_mounted(store):
    store.create("l")
    store.create("c", "l")
    with pytest.raises(LayerInUse):
        store.apply("l", io.BytesIO(ONE))
    store.get("c")
    with pytest.raises(LayerInUse):
        store.apply("c", io.BytesIO(ONE))
    store.put("c")


def test_labels(store):
    store.create("l", labels={"a": "1"})
    assert store.set_labels("l", {"b": "2"}).labels == {"a": "1", "b": "2"}
    assert store.set_labels("l", {"c": "3"}, replace=True).labels == {"c": "3"}
    with pytest.raises(InvalidArgument):
        store.set_labels("l", {"k": "v" * 5000})


def test_diff_and_changes_default_to_parent(store):
    store.create("base", diff=io.BytesIO(ONE))
    store.create("rw", "base", kind="active")
    path = store.get("rw")
    with open(os.path.join(path, "a/new"), "w") as f:
        f.write("new")
    store.put("rw")
    assert [(c.path, int(c.kind)) for c in store.changes("rw")] == [("/a", 0), ("/a/new", 1)]
    assert store.diff_size("rw") == 3
    data = store.diff("rw").read()
    copy = store.create("copy", "base", diff=io.BytesIO(data))
    assert copy.diff_id == sha(data)
    assert describe(store.get("copy")) == describe(store.get("rw"))
    store.put("copy")
    store.put("rw")


def test_reopen_keeps_driver_and_refuses_another(tmp_path):
    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        s.create("x")
    with Store(root) as s:
        assert s.driver_name == "vfs"
        assert s.exists("x")


def test_opening_an_existing_store_takes_no_lock_and_restores_its_schema(tmp_path):
    import fcntl
    import threading

    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        s.create("x")
    # Another process in a long transaction holds the store lock: opening must not wait.
    fd = os.open(root / "store.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    opened = []
    t = threading.Thread(target=lambda: opened.append(Store(root)), daemon=True)
    t.start()
    t.join(10)
    waited = not opened
    os.close(fd)  # releases the lock, so a waiting open finishes either way
    t.join(10)
    assert not waited and opened[0].exists("x")
    opened[0].close()
    # A store missing part of its schema (an index) gets it back on open.
    with sqlite3.connect(root / "store.db") as db:
        db.execute("DROP INDEX layers_chain")
    with Store(root) as s:
        names = {r[0] for r in s.db.execute("SELECT name FROM sqlite_master")}
        assert "layers_chain" in names and s.exists("x")


def test_other_driver_on_nonempty_store(tmp_path, monkeypatch):
    from storagekit import registry

    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        s.create("x")
    with sqlite3.connect(root / "store.db") as db:
        db.execute("UPDATE meta SET value = 'other' WHERE key = 'driver'")
    monkeypatch.setattr(registry, "available", lambda: {"vfs": registry.driver_class("vfs")})
    with pytest.raises(StoreError, match="holds layers of driver 'other'"):
        Store(root, "vfs")


def test_corrupt_database_is_a_clear_error(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "store.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the store database"):
        Store(root, "vfs")


def test_concurrent_processes(tmp_path):
    """Several processes create and remove layers on one store at once."""
    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        s.create("base", diff=io.BytesIO(ONE))
    code = textwrap.dedent("""
        import sys
        from storagekit.store import Store
        n = sys.argv[2]
        with Store(sys.argv[1]) as s:
            for i in range(15):
                s.create(f"l{n}-{i}", "base", kind="active")
                p = s.get(f"l{n}-{i}")
                s.put(f"l{n}-{i}")
            for i in range(0, 15, 3):
                s.remove(f"l{n}-{i}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(n)]) for n in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    with Store(root) as s:
        ids = {layer.id for layer in s.layers()}
        assert len(ids) == 1 + 4 * 10
        assert s.driver.refcount("l0-1") == 0


def test_one_store_shared_by_threads(tmp_path):
    """Threads share one Store: their transactions exclude each other, a thread's nested
    transactions join its own, and a failure rolls back only the failing thread's."""
    import threading

    errors: list[BaseException] = []
    with Store(tmp_path / "root", "vfs") as store:
        def work(n: int) -> None:
            try:
                for i in range(8):
                    store.create(f"t{n}-{i}", labels={"thread": str(n)})
                    with store.transaction(), store.transaction():  # the inner one joins
                        store.db.execute("INSERT INTO meta(key, value) VALUES (?, 'kept')",
                                         (f"t{n}-{i}",))
                    with pytest.raises(ZeroDivisionError), store.transaction():
                        store.db.execute("INSERT INTO meta(key, value) VALUES (?, 'gone')",
                                         (f"x{n}-{i}",))
                        with store.transaction():
                            1 / 0  # noqa: B018
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert len(store.layers()) == 48
        values = [v for (v,) in store.db.execute(
            "SELECT value FROM meta WHERE key LIKE 't%' OR key LIKE 'x%'")]
        assert values == ["kept"] * 48
