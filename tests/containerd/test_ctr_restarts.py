"""containerd and the snapshotter restarted in the middle of their work: what containerd
knows and what the store holds are still there, and both go on from where they were."""

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


def layer_ids(env) -> list[str]:
    return sorted(layer["id"] for layer in env.layers())


def test_containerd_restart(ctrd, busybox_image, layered_image):
    import_image(ctrd, busybox_image)
    ctrd.ctr("containers", "create", "--snapshotter", ctrd.name, BUSYBOX, "kept", "true")
    rows, layers = snapshot_rows(ctrd), layer_ids(ctrd)
    assert len(rows) == 2
    ctrd.containerd.restart()
    assert snapshot_rows(ctrd) == rows
    assert layer_ids(ctrd) == layers
    # the container's snapshot is still its own, writable, and boots
    out = run(ctrd, BUSYBOX, "after", "echo", "booted after the restart").stdout
    assert out == "booted after the restart\n"
    import_image(ctrd, layered_image[0])
    assert run(ctrd, LAYERED, "view", "sh", "-c", LAYERED_VIEW_SCRIPT).stdout.split(
        "\n")[:-1] == LAYERED_VIEW
    ctrd.ctr("containers", "rm", "kept")


def test_snapshotter_restart(ctrd, busybox_image, layered_image):
    import_image(ctrd, busybox_image)
    ctrd.ctr("run", "--snapshotter", ctrd.name, BUSYBOX, "kept", "sh", "-c",
             "echo written before > /etc/kept")
    rows, layers = snapshot_rows(ctrd), layer_ids(ctrd)
    ctrd.restart()  # SIGTERM, then a new server on the same store
    assert layer_ids(ctrd) == layers
    assert snapshot_rows(ctrd) == rows
    # containerd reaches the new server by itself (it dials the socket again)
    r = import_image(ctrd, layered_image[0], check=False)
    assert r.returncode == 0, r.stderr
    assert run(ctrd, LAYERED, "view", "sh", "-c", LAYERED_VIEW_SCRIPT).stdout.split(
        "\n")[:-1] == LAYERED_VIEW
    # the stopped container's writable snapshot kept what it wrote
    ctrd.ctr("tasks", "start", "kept", check=False)  # its first process has exited: a no-op
    mounts = ctrd.snapshots("mounts", "/mnt", "kept").stdout
    assert mounts.startswith("mount -t "), mounts
    assert any(layer["kind"] == "active" for layer in ctrd.layers())
    ctrd.ctr("containers", "rm", "kept")


def test_server_down_then_up(ctrd, busybox_image):
    """A snapshotter that is not running is Unavailable to containerd, which takes it back as
    soon as it is there again."""
    ctrd.stop()
    r = import_image(ctrd, busybox_image, check=False, timeout=120)
    assert r.returncode != 0 and "unavailable" in r.stderr.lower(), r.stderr
    ctrd.start()
    r = import_image(ctrd, busybox_image, check=False)
    assert r.returncode == 0, r.stderr
    assert run(ctrd, BUSYBOX, "up", "echo", "up").stdout == "up\n"
    assert [kind for _, _, kind in snapshot_rows(ctrd)] == ["Committed"]
