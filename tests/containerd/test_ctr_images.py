"""Images through containerd onto storagekit-<driver>: ctr images import unpacks them through
the snapshotter's mounts (containerd applies the layer diffs itself, whiteouts included), ctr
run boots them, ctr images rm and containerd's garbage collection take the snapshots away."""

from __future__ import annotations

from ctrutil import (
    BUSYBOX,
    LAYERED,
    LAYERED_VIEW,
    LAYERED_VIEW_SCRIPT,
    import_image,
    run,
    snapshot_rows,
)


def test_containerd_loads_the_proxy_plugin(ctrd):
    rows = [line.split() for line in ctrd.out("plugins", "ls").splitlines()]
    assert ["io.containerd.snapshotter.v1", ctrd.name, "-", "ok"] in rows


def test_busybox_boots(ctrd, busybox_image):
    import_image(ctrd, busybox_image)
    out = run(ctrd, BUSYBOX, "boot", "sh", "-c",
              "echo booted; ls /bin/busybox; id -u; head -1 /etc/passwd").stdout
    assert out.split("\n") == ["booted", "/bin/busybox", "0", "root:x:0:0:root:/root:/bin/sh",
                               ""], out
    # One committed snapshot for the one layer, kept in the store as one layer; the
    # container's own snapshot goes with it (--rm), from the store once containerd's garbage
    # collection has run.
    rows = snapshot_rows(ctrd)
    assert [kind for _, _, kind in rows] == ["Committed"], rows
    assert [layer["kind"] for layer in ctrd.settled_layers(1)] == ["committed"]


def test_layered_image_with_whiteouts_and_opaque_dirs(ctrd, layered_image):
    path, layers = layered_image
    import_image(ctrd, path)
    out = run(ctrd, LAYERED, "view", "sh", "-c", LAYERED_VIEW_SCRIPT).stdout
    assert out.split("\n")[:-1] == LAYERED_VIEW, out
    rows = snapshot_rows(ctrd)
    assert sorted(kind for _, _, kind in rows) == ["Committed"] * len(layers), rows
    # a chain: each snapshot's parent is the one below it
    keys = {key for key, _, _ in rows}
    assert sorted(bool(parent) for _, parent, _ in rows) == [False] + [True] * (len(layers) - 1)
    assert all(parent in keys for _, parent, _ in rows if parent)
    assert len(ctrd.settled_layers(len(layers))) == len(layers)


def test_writes_stay_in_the_container(ctrd, busybox_image):
    import_image(ctrd, busybox_image)
    ctrd.ctr("run", "--snapshotter", ctrd.name, BUSYBOX, "writer", "sh", "-c",
             "echo mine > /etc/written; rm /etc/passwd")
    # the container's snapshot is active, on top of the image's, and holds the change
    rows = {key: (parent, kind) for key, parent, kind in snapshot_rows(ctrd)}
    assert rows["writer"][1] == "Active", rows
    out = run(ctrd, BUSYBOX, "reader", "sh", "-c",
              "test -e /etc/written && echo leaked; head -1 /etc/passwd").stdout
    assert out == "root:x:0:0:root:/root:/bin/sh\n", out
    ctrd.ctr("containers", "rm", "writer")
    assert "writer" not in {key for key, _, _ in snapshot_rows(ctrd)}
    assert len(ctrd.settled_layers(1)) == 1


def test_images_rm_and_gc_remove_the_snapshots(ctrd, busybox_image, layered_image):
    import_image(ctrd, busybox_image)
    import_image(ctrd, layered_image[0])
    # storagekit's export of busybox and the layered image's own busybox tar are different
    # layers (other bytes, other diff ids): two chains.
    assert len(snapshot_rows(ctrd)) == 1 + len(layered_image[1])
    ctrd.ctr("images", "rm", "--sync", LAYERED)
    assert len(snapshot_rows(ctrd)) == 1
    assert len(ctrd.layers()) == 1  # --sync: the collection has reached the snapshotter too
    ctrd.ctr("images", "rm", "--sync", BUSYBOX)
    assert snapshot_rows(ctrd) == []
    assert ctrd.layers() == []
    assert ctrd.layer_mounts() == []
