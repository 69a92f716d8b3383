"""Bad requests through ctr on storagekit-<driver>: each fails with the error containerd's
errdefs name, and nothing crashes, is left half made, or is written outside the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctrutil import import_image, snapshot_rows


@pytest.fixture
def base(ctrd, busybox_image) -> str:
    import_image(ctrd, busybox_image)
    (key, _, _), = snapshot_rows(ctrd)
    return key


def refused(env, *args: str) -> str:
    r = env.snapshots(*args, check=False)
    assert r.returncode != 0, f"ctr snapshots {' '.join(args)[:200]} succeeded"
    return r.stderr


def test_bad_requests_get_containerd_errors(ctrd, base):
    ctrd.snapshots("prepare", "busy", base)
    before = sorted(layer["id"] for layer in ctrd.layers())

    assert "not found" in refused(ctrd, "prepare", "orphan", "no-such-parent")
    assert "already exists" in refused(ctrd, "prepare", "busy", base)
    # an active parent: containerd's database has it, so only the snapshotter can say no
    assert "invalid argument" in refused(ctrd, "prepare", "child", "busy")
    assert "invalid argument" in refused(ctrd, "view", "look", "busy")
    assert "invalid argument" in refused(ctrd, "prepare", "k" * 10_000, base)
    assert "not found" in refused(ctrd, "commit", "done", "no-such-key")
    assert "not found" in refused(ctrd, "rm", "no-such-key")
    big = "v" * 5000
    assert "invalid argument" in refused(ctrd, "label", base, f"containerd.io/snapshot/x={big}")
    assert "precondition" in refused(ctrd, "rm", base)  # it has a child

    # none of it made or changed a layer, and both daemons still serve
    assert sorted(layer["id"] for layer in ctrd.layers()) == before
    assert ctrd.server.proc.poll() is None and ctrd.containerd.proc.poll() is None
    assert {key for key, _, _ in snapshot_rows(ctrd)} == {base, "busy"}
    ctrd.snapshots("rm", "busy")


ESCAPES = ["../../../../../../tmp/sk-escape-key", "/etc/sk-escape-key", "a/../../b", ".."]


def test_keys_are_never_paths(ctrd, base, tmp_path):
    for key in ESCAPES:
        mounts = json.loads(ctrd.snapshots("prepare", "--mounts", key, base).stdout)
        assert mounts, key
        for m in mounts:  # every path a mount names is in the store
            paths = [m["Source"]] + [o.split("=", 1)[1] for o in m["Options"] if "=" in o]
            for p in paths:
                for part in p.split(":"):
                    if part.startswith("/") and not part.startswith("/dev/"):
                        assert Path(part).resolve().is_relative_to(ctrd.store.resolve()), \
                            (key, m)
    assert not Path("/tmp/sk-escape-key").exists() and not Path("/etc/sk-escape-key").exists()
    info = json.loads(ctrd.snapshots("info", "a/../../b").stdout)
    assert (info["Name"], info["Kind"]) == ("a/../../b", "Active")
    for key in ESCAPES:
        ctrd.snapshots("rm", key)
    assert [key for key, _, _ in snapshot_rows(ctrd)] == [base]
