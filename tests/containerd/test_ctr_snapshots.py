"""`ctr snapshots` on storagekit-<driver>: prepare, mounts, info, usage, commit, view, tree,
label and rm, with the data written through the snapshotter's mounts."""

from __future__ import annotations

import json
import os

import pytest
from ctrutil import import_image, mount_all, snapshot_rows, umount


def info(env, key: str) -> dict:
    return json.loads(env.snapshots("info", key).stdout)


def kept_view(env, key: str, parent: str) -> list[dict]:
    """`ctr snapshots view --mounts KEY PARENT`, kept from containerd's garbage collection.
    Unlike prepare and commit, ctr's view gives the snapshot no gc.root label, so a collection
    that a deletion just scheduled (the commit's) can take it before anything refers to it:
    label it, and make it again if it went first."""
    for _ in range(5):
        mounts = json.loads(env.snapshots("view", "--mounts", key, parent).stdout)
        r = env.snapshots("label", key, "containerd.io/gc.root=test", check=False)
        if r.returncode == 0 and env.snapshots("info", key, check=False).returncode == 0:
            return mounts
    raise AssertionError(f"view {key} was collected five times in a row")


@pytest.fixture
def base(ctrd, busybox_image) -> str:
    """The busybox image's committed snapshot (its chain id)."""
    import_image(ctrd, busybox_image)
    (key, _, kind), = snapshot_rows(ctrd)
    assert kind == "Committed"
    return key


def test_prepare_write_commit_view(ctrd, base, tmp_path):
    mounts = json.loads(ctrd.snapshots("prepare", "--mounts", "work", base).stdout)
    target = tmp_path / "rw"
    target.mkdir()
    mount_all(mounts, target)
    try:
        (target / "etc/hello").write_text("hi\n")
        os.unlink(target / "etc/group")  # a whiteout, in the driver's own format
        assert (target / "bin/busybox").exists()
    finally:
        umount(target)
    active = info(ctrd, "work")
    assert (active["Kind"], active["Parent"]) == ("Active", base), active
    assert "containerd.io/gc.root" in active["Labels"]
    key, size, inodes = ctrd.snapshots("usage", "-b", "work").stdout.splitlines()[1].split()
    assert key == "work" and int(size) >= 3 and int(inodes) >= 1, (size, inodes)

    ctrd.snapshots("commit", "done", "work")
    committed = info(ctrd, "done")
    assert (committed["Kind"], committed["Parent"]) == ("Committed", base), committed
    r = ctrd.snapshots("info", "work", check=False)
    assert r.returncode != 0 and "not found" in r.stderr, r.stderr

    mounts = kept_view(ctrd, "look", "done")
    target = tmp_path / "ro"
    target.mkdir()
    mount_all(mounts, target)
    try:
        assert (target / "etc/hello").read_text() == "hi\n"
        assert not (target / "etc/group").exists()
        assert (target / "etc/passwd").exists()
        with pytest.raises(OSError):  # a view is read-only for real
            (target / "etc/new").write_text("x")
    finally:
        umount(target)
    assert info(ctrd, "look")["Kind"] == "View"

    tree = ctrd.snapshots("tree").stdout
    lines = [line.strip() for line in tree.splitlines()]
    assert base in lines[0] and "done" in lines[1] and "look" in lines[2], tree

    # Remove of a snapshot with children fails, and takes nothing with it.
    r = ctrd.snapshots("rm", "done", check=False)
    assert r.returncode != 0 and "precondition" in r.stderr, r.stderr
    assert info(ctrd, "done")["Kind"] == "Committed"
    ctrd.snapshots("rm", "look")
    ctrd.snapshots("rm", "done")
    assert [key for key, _, _ in snapshot_rows(ctrd)] == [base]
    assert len(ctrd.settled_layers(1)) == 1  # removed from the store by containerd's GC


def test_labels(ctrd, base):
    # containerd keeps labels in its own database and hands the snapshotter only those under
    # containerd.io/snapshot/ (what remote snapshotters read): those must reach the store.
    ours = "containerd.io/snapshot/storagekit.test"
    ctrd.snapshots("label", base, f"{ours}.owner=tests", f"{ours}.n=1", "plain=local")
    labels = info(ctrd, base)["Labels"]
    assert (labels[f"{ours}.owner"], labels[f"{ours}.n"], labels["plain"]) == ("tests", "1",
                                                                             "local")
    stored = ctrd.layer_labels(base)
    assert (stored[f"{ours}.owner"], stored[f"{ours}.n"]) == ("tests", "1"), stored
    ctrd.snapshots("label", base, f"{ours}.n=")  # an empty value removes the label
    assert f"{ours}.n" not in info(ctrd, base)["Labels"]
    assert f"{ours}.n" not in ctrd.layer_labels(base)
    # kept with the layer: a restarted server still has them
    ctrd.restart()
    assert ctrd.layer_labels(base)[f"{ours}.owner"] == "tests"
