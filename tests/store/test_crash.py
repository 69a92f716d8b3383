"""kill -9 in the middle of creating or applying a layer: nothing half-made stays visible,
and the next open of the store cleans it up."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from treeutil import make_tar

from storagekit.store import Store

BIG = make_tar(
    [{"name": "d", "type": "dir"}]
    + [{"name": f"d/f{i:04d}", "data": os.urandom(8192)} for i in range(1500)]
)

CHILD = textwrap.dedent("""
    import sys
    from storagekit.store import Store
    root, mode, fifo = sys.argv[1:4]
    with Store(root) as s, open(fifo, "rb") as f:
        if mode == "create":
            s.create("victim", "base", diff=f)
        else:
            s.apply("victim", f)
""")


def _state(root, layer_id):
    with sqlite3.connect(root / "store.db") as db:
        row = db.execute("SELECT state FROM layers WHERE id = ?", (layer_id,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("mode", ["create", "apply"])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_kill_9_mid_apply(tmp_path, mode, fraction):
    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        s.create("base", diff=io.BytesIO(make_tar([{"name": "keep", "data": b"k"}])))
        if mode == "apply":
            s.create("victim", "base")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), mode, str(fifo)])
    try:
        with open(fifo, "wb") as w:
            w.write(BIG[: int(len(BIG) * fraction)])
            w.flush()
            expected = "creating" if mode == "create" else "applying"
            deadline = time.monotonic() + 30
            while _state(root, "victim") != expected:
                assert time.monotonic() < deadline, "the child never started"
                time.sleep(0.01)
            time.sleep(0.2)  # let it write some of what it got
            with Store(root) as observer:  # a concurrent user never sees the half-made layer
                assert not observer.exists("victim")
                assert [layer.id for layer in observer.layers()] == ["base"]
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _state(root, "victim") == expected  # the dead process's record is still there
    with Store(root) as s:  # the next open cleans it up
        assert _state(root, "victim") is None
        assert [layer.id for layer in s.layers()] == ["base"]
        assert sorted(os.listdir(s.driver.home / "dir")) == ["base"]
        assert not any((root / "locks").iterdir())
        s.create("victim", "base", diff=io.BytesIO(BIG))  # the store works on
        assert len(os.listdir(os.path.join(s.get("victim"), "d"))) == 1500
        s.put("victim")
