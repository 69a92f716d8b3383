"""`layer apply` onto a layer that has content: input that is not an archive is refused before
anything is touched, and a tar that fails half-way (after it replaced and deleted files) leaves
the layer as it was, on every driver, through the command users run."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from cliutil import command
from treeutil import describe, make_tar

from storagekit import registry
from storagekit.store import Store

DRIVERS = sorted(registry.available())


def sk(root, *args, input: bytes | None = None, check: bool = True):
    proc = subprocess.run([command(), "--root", str(root), *map(str, args)],
                          input=input, capture_output=True)
    assert not check or proc.returncode == 0, proc.stderr.decode()
    return proc


def js(root, *args):
    return json.loads(sk(root, "--json", *args).stdout)

FIRST = make_tar([
    {"name": "etc", "type": "dir"},
    {"name": "etc/keep", "data": b"precious\n"},
    {"name": "etc/other", "data": b"also precious\n"},
])
# Replaces a file and deletes another, then escapes its layer: refused at the last entry.
HALF_BAD = make_tar([
    {"name": "etc/keep", "data": b"overwritten\n"},
    {"name": "etc/.wh.other", "data": b""},
    {"name": "../../escape", "data": b"x"},
])


@pytest.fixture(params=DRIVERS)
def root(request, tmp_path):
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    r = tmp_path / "root"
    sk(r, "--driver", request.param, "layer", "create", "--rw", "a")
    first = tmp_path / "first.tar"
    first.write_bytes(FIRST)
    sk(r, "layer", "apply", "a", str(first))
    yield r
    with Store(r) as store:
        for layer in store.layers():
            store.remove(layer.id)
        store.driver.cleanup()


def tree(root) -> dict:
    with Store(root) as store:
        path = store.get("a")
        try:
            return {p: d.get("sha256") for p, d in describe(path, times=False).items()}
        finally:
            store.put("a")


@pytest.mark.parametrize("payload", [
    b"this is not a tar\n" * 40,
    b"",
    gzip.compress(b"a gzip of text, not of a tar\n" * 40),
    b"\x1f\x8b\x08\x00" + os.urandom(600),
], ids=["text", "empty", "gzip-of-text", "gzip-garbage"])
def test_not_an_archive_is_refused_before_anything(root, tmp_path, payload):
    before = tree(root)
    bad = tmp_path / "notatar.txt"
    bad.write_bytes(payload)
    proc = sk(root, "layer", "apply", "a", str(bad), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "invalid layer archive" in err, err
    assert "left as it was" in err, err
    assert [layer["id"] for layer in js(root, "layer", "ls")] == ["a"]
    assert tree(root) == before
    # the same through a pipe (read once, nothing lost)
    proc = sk(root, "layer", "apply", "a", "-", input=payload, check=False)
    assert proc.returncode == 1 and "left as it was" in proc.stderr.decode()
    assert tree(root) == before


def test_failure_half_way_keeps_the_content(root, tmp_path):
    before = tree(root)
    assert "/etc/other" in before
    bad = tmp_path / "half.tar"
    bad.write_bytes(HALF_BAD)
    proc = sk(root, "layer", "apply", "a", str(bad), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "left as it was" in err, err
    assert tree(root) == before
    (layer,) = js(root, "layer", "ls")
    assert layer["size"] == len(b"precious\n") + len(b"also precious\n")
    # and a good second tar still applies on top, through the scratch child
    good = tmp_path / "good.tar"
    good.write_bytes(make_tar([{"name": "etc/keep", "data": b"new\n"},
                               {"name": "etc/added", "data": b"added\n"}]))
    sk(root, "layer", "apply", "a", str(good))
    after = tree(root)
    assert after["/etc/other"] == before["/etc/other"]
    assert after["/etc/added"] == hashlib.sha256(b"added\n").hexdigest()
    assert after["/etc/keep"] == hashlib.sha256(b"new\n").hexdigest()


def test_killed_before_the_layer_changes_keeps_it(root, tmp_path):
    """A kill while the tar is still being read (into the scratch child) leaves the layer
    whole: the next command finds it ready and its scratch child gone."""
    before = tree(root)
    proc = subprocess.Popen([command(), "--root", str(root), "layer", "apply", "a", "-"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    half = HALF_BAD[:1536]  # the replacing entry and the whiteout, not the end
    proc.stdin.write(half)
    proc.stdin.flush()
    with Store(root) as store:
        for _ in range(200):
            row = store._db.execute("SELECT 1 FROM meta WHERE key = 'staging a'").fetchone()
            if row is not None:
                break
            time.sleep(0.05)
        assert row is not None, "the apply never began staging"
    time.sleep(0.3)  # not a timing assertion: time for the entries to reach the scratch child
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stderr.close()
    assert [layer["id"] for layer in js(root, "layer", "ls")] == ["a"]
    assert tree(root) == before
    with Store(root) as store:
        assert not store.driver.exists("a.apply")
