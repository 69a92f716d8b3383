"""dockerd 20.10 itself on storagekit's drivers: docker load, run, diff, commit, export, a
classic build, rmi and prune, and restarts of the plugin and of dockerd — for vfs, overlay,
aufs and devicemapper (fixture docker_env, one dockerd per driver)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from dockerutil import mounts_under

# Every test runs once per driver: dockerd is started once per driver, tests are grouped so.
pytestmark = pytest.mark.slow

WRITE_AND_DELETE = (
    "echo new > /new.txt && rm /etc/group && echo more >> /etc/passwd && "
    "mkdir -p /data/sub && echo x > /data/sub/f && rm -r /var/tmp"
)
# What `docker diff` shows for WRITE_AND_DELETE (Docker's archive.ChangeType letters).
WRITE_AND_DELETE_CHANGES = {
    "A /new.txt", "C /etc", "D /etc/group", "C /etc/passwd", "A /data", "A /data/sub",
    "A /data/sub/f", "C /var", "D /var/tmp",
}


def load(docker, image) -> str:
    out = docker.out("load", "-i", str(image))
    assert out.startswith("Loaded image"), out
    return out.split(":", 1)[1].strip()


def test_load_and_run_busybox(docker, busybox_image):
    assert load(docker, busybox_image) == "busybox:latest"
    info = docker.dockerd.inspect("busybox:latest")[0]
    assert info["GraphDriver"]["Name"] == docker.plugin.name
    out = docker.out("run", "--rm", "busybox", "sh", "-c",
                     "echo hello from $(cat /etc/hostname); ls /bin/busybox; id -u")
    assert out.split("\n")[1:3] == ["/bin/busybox", "0"], out
    assert out.startswith("hello from "), out
    # The storage really is the plugin's: docker info shows the driver's status.
    assert f"Storage Driver: {docker.plugin.name}" in docker.out("info")
    assert docker.status()["Driver"] == docker.driver


def test_layered_image_with_whiteouts_and_opaque_dirs(docker, layered_image):
    path, _ = layered_image
    assert load(docker, path) == "layered:1"
    out = docker.out("run", "--rm", "layered:1", "sh", "-c",
                     "ls /app; cat /bin/tool; echo; readlink /etc/motd; "
                     "test -e /etc/doomed && echo doomed-still-there; head -1 /etc/passwd")
    assert out.split("\n") == ["new", "v3 replaced", "/etc/issue", "root:x:0:0:root:/root:/bin/sh",
                               ""], out


def test_save_gives_back_the_loaded_layers(docker, layered_image):
    """dockerd rebuilds each layer tar from its tar-split record and the layer's files read
    through the plugin: docker save reproduces the very tars that were loaded (which a
    driver claiming ReproducesExactDiffs could not: its own export is another tar)."""
    path, layers = layered_image
    load(docker, path)
    saved = docker.docker("save", "layered:1", binary=True).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        digests = [hashlib.sha256(tar.extractfile(name).read()).hexdigest()
                   for name in manifest[0]["Layers"]]
    assert digests == [hashlib.sha256(layer).hexdigest() for layer in layers]


def test_container_changes_diff_commit_export(docker, busybox_image):
    load(docker, busybox_image)
    docker.docker("run", "--name", "writer", "busybox", "sh", "-c", WRITE_AND_DELETE)
    assert set(docker.out("diff", "writer").splitlines()) == WRITE_AND_DELETE_CHANGES

    docker.docker("commit", "writer", "committed:1")
    out = docker.out("run", "--rm", "committed:1", "sh", "-c",
                     "cat /new.txt /data/sub/f; tail -1 /etc/passwd; ls /etc/group /var/tmp 2>&1"
                     " | wc -l; ls /var")
    lines = out.split("\n")
    assert lines[:3] == ["new", "x", "more"], out
    assert lines[3].strip() == "2", out  # both ls failed: one line of complaint each
    assert "tmp" not in lines[4:], out
    history = docker.out("history", "-q", "committed:1").split()
    assert len(history) == 2  # the committed layer on busybox's

    exported = docker.docker("export", "writer", binary=True).stdout
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        names = set(tar.getnames())
        passwd = tar.extractfile("etc/passwd").read()
    assert {"new.txt", "data/sub/f", "bin/busybox"} <= names
    assert "etc/group" not in names and "var/tmp" not in names
    assert passwd.endswith(b"more\n")


def test_classic_build(docker, busybox_image, tmp_path):
    load(docker, busybox_image)
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN echo one > /added && echo v1 > /changed && echo doomed > /doomed && "
        "mkdir -p /dir/sub && echo f > /dir/sub/f\n"
        "RUN echo v2 > /changed && rm /doomed && rm -r /dir/sub && echo g > /dir/g\n"
        "RUN rm /etc/group && echo two >> /added\n")
    docker.docker("build", "-q", "-t", "built:1", str(tmp_path))
    out = docker.out("run", "--rm", "built:1", "sh", "-c",
                     "cat /added /changed; ls /dir; ls /doomed /dir/sub /etc/group 2>&1 | wc -l")
    assert out.split() == ["one", "two", "v2", "g", "3"], out
    assert len(docker.out("history", "-q", "built:1").split()) == 4
    # Each step is a layer of its own in the store, on the one before.
    layers = docker.dockerd.inspect("built:1")[0]["RootFS"]["Layers"]
    assert len(layers) == 4


def test_rmi_and_prune_leave_nothing_behind(docker, busybox_image, layered_image):
    before = docker.store_layers()
    load(docker, busybox_image)
    load(docker, layered_image[0])
    docker.docker("run", "--name", "c1", "busybox", "sh", "-c", WRITE_AND_DELETE)
    docker.docker("commit", "c1", "committed:2")
    docker.docker("create", "--name", "c2", "layered:1")
    assert docker.store_layers() > before
    docker.docker("rm", "c1", "c2")
    docker.docker("rmi", "committed:2", "layered:1")
    docker.docker("system", "prune", "-af")
    assert docker.out("images", "-aq") == ""
    assert docker.store_layers() == 0
    # No layer mounted: dockerd put back every one it got. (On devicemapper, a thin device
    # found busy at its put stays active until Cleanup: deferred removal, see DRIVER_OPTIONS.)
    assert not docker.layer_mounts()
    if docker.driver not in ("devicemapper", "btrfs"):  # btrfs: its loopback, until Cleanup
        assert not mounts_under(docker.store)


def test_plugin_restart_with_containers(docker, busybox_image):
    load(docker, busybox_image)
    docker.docker("run", "-d", "--name", "live", "--stop-timeout", "1", "busybox", "sh", "-c",
                  "echo started > /state; while sleep 0.2; do :; done")
    docker.docker("create", "--name", "idle", "busybox", "cat", "/etc/hostname")
    docker.docker("exec", "live", "cat", "/state")
    pid = docker.dockerd.inspect("live")[0]["State"]["Pid"]

    assert docker.plugin.stop() == 0
    assert not os.path.exists(docker.plugin.socket)
    # The container's layer stays mounted while the plugin is away, and the container runs
    # on (seen from the host: dockerd itself asks the plugin for everything it inspects).
    state = f"/proc/{pid}/root/state"
    with open(state) as f:
        assert f.read() == "started\n"
    with open(state, "a") as f:
        f.write("again\n")

    docker.plugin.start()  # no Init this time: dockerd does not know it went
    assert docker.out("exec", "live", "cat", "/state") == "started\nagain\n"
    assert "A /state" in docker.out("diff", "live").splitlines()
    docker.docker("commit", "live", "live:1")
    assert docker.out("run", "--rm", "live:1", "cat", "/state") == "started\nagain\n"
    docker.docker("stop", "live")
    docker.docker("start", "live")
    assert docker.out("exec", "live", "cat", "/state") == "started\n"  # the command ran again
    docker.docker("start", "-a", "idle")
    docker.docker("rm", "-f", "live", "idle")


def test_dockerd_restart_with_images(docker, busybox_image):
    load(docker, busybox_image)
    docker.docker("run", "--name", "made", "busybox", "sh", "-c", WRITE_AND_DELETE)
    docker.docker("commit", "made", "made:1")
    images = docker.out("images", "-q", "--no-trunc")

    docker.stop_dockerd()
    # dockerd's Cleanup released every mount; the layers are all still there.
    assert not mounts_under(docker.store)
    layers = docker.store_layers()
    # Restarted in the other order as well: the plugin first, then dockerd.
    assert docker.plugin.stop() == 0
    docker.start()

    assert docker.out("images", "-q", "--no-trunc") == images
    assert docker.store_layers() == layers
    assert set(docker.out("diff", "made").splitlines()) == WRITE_AND_DELETE_CHANGES
    assert docker.out("run", "--rm", "made:1", "cat", "/new.txt") == "new\n"
    # The container's own layer came back too: run again, its command finds its own work.
    again = docker.docker("start", "-a", "made", check=False)
    assert again.returncode == 1 and "can't remove '/etc/group'" in again.stderr, again


def test_per_container_size_is_refused_in_one_line(docker, busybox_image):
    load(docker, busybox_image)
    proc = docker.docker("run", "--rm", "--storage-opt", "size=1G", "busybox", "true",
                         check=False)
    assert proc.returncode != 0
    assert "--storage-opt size is not supported by storagekit's" in proc.stderr, proc.stderr
    assert docker.out("ps", "-aq") == ""  # nothing half made stays
