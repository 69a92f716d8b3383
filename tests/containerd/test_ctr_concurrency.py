"""Many containers at once on storagekit-<driver>, and a snapshotter killed (-9) in the middle
of containerd's unpack: containerd's import retried succeeds and nothing is left half made."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import time

import pytest
from containerd_util import CTR
from ctrutil import BUSYBOX, import_image, run, snapshot_rows
from imageutil import write_docker_save

PARALLEL = 16


def test_parallel_runs(ctrd, busybox_image):
    import_image(ctrd, busybox_image)
    procs = {}
    for i in range(PARALLEL):
        cid = f"par{i}"
        # each writes its own name where all the others write theirs: a container sees only
        # its own writable snapshot
        procs[cid] = subprocess.Popen(
            [CTR, "-a", ctrd.containerd.socket, "run", "--rm", "--snapshotter", ctrd.name,
             BUSYBOX, cid, "sh", "-c", f"echo {cid} > /etc/me; sleep 0.2; cat /etc/me"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    results = {cid: (p.wait(timeout=300), *p.communicate()) for cid, p in procs.items()}
    failed = {cid: r for cid, r in results.items() if r[0] != 0 or not r[1]}
    assert not failed, failed
    assert {cid: out for cid, (_, out, _) in results.items()} == {
        cid: f"{cid}\n" for cid in procs}
    assert [kind for _, _, kind in snapshot_rows(ctrd)] == ["Committed"]
    assert len(ctrd.settled_layers(1)) == 1
    assert ctrd.layer_mounts() == []


LAYERS = 12


@pytest.fixture(scope="module")
def many_layer_image(busybox_tar, tmp_path_factory):
    """busybox and LAYERS layers of 2 MiB each: an unpack that lasts long enough to be
    interrupted."""
    layers = [busybox_tar.read_bytes()]
    for n in range(LAYERS):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in range(16):
                data = os.urandom(128 << 10)
                info = tarfile.TarInfo(f"data/l{n}/f{f}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        layers.append(buf.getvalue())
    path = tmp_path_factory.mktemp("many-layers") / "many.tar"
    write_docker_save(path, layers, tag="many:1")
    return path, len(layers)


def test_kill_9_during_unpack(ctrd, many_layer_image):
    path, count = many_layer_image
    ref = "docker.io/library/many:1"
    importer = subprocess.Popen(
        [CTR, "-a", ctrd.containerd.socket, "images", "import", "--snapshotter", ctrd.name,
         str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True)
    # kill once a few layers are in, well before the last
    deadline = time.monotonic() + 120
    while len(ctrd.layers()) < 3 and importer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert importer.poll() is None, "the import ended before the snapshotter could be killed"
    assert ctrd.stop(signal.SIGKILL) == -signal.SIGKILL
    _, err = importer.communicate(timeout=300)
    assert importer.returncode != 0, "the import succeeded without its snapshotter"
    assert "unavailable" in err or "connection" in err, err

    ctrd.start()  # a new server on the store the killed one left
    # the import again (made again while containerd redials the server: conftest.py)
    r = import_image(ctrd, path, check=False)
    assert r.returncode == 0, r.stderr
    assert run(ctrd, ref, "after-kill", "sh", "-c", "ls /data | wc -l").stdout == f"{LAYERS}\n"
    rows = snapshot_rows(ctrd)
    assert sorted(kind for _, _, kind in rows) == ["Committed"] * count, rows
    # In the store: each of those snapshots is a committed layer. The layers the killed
    # unpack had committed are there too, complete, until containerd's next collection on
    # this snapshotter (it lost them with the import's lease, and its removal of them could
    # not reach a dead server): the image's removal below takes everything.
    layers = ctrd.layers()
    names = {layer["name"].rpartition("/")[2]: layer["kind"] for layer in layers}
    assert all(names.get(key) == "committed" for key, _, _ in rows), (rows, layers)
    ctrd.ctr("images", "rm", "--sync", ref)
    assert snapshot_rows(ctrd) == []
    assert ctrd.layers() == []
    assert ctrd.layer_mounts() == []
