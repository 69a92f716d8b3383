"""The `ctr run` baseline: containerd's own boot of the same busybox, beside every driver's.

A private containerd (its root, state and sockets under the run's directory, so on the disk
measured) is started for the run and stopped afterwards, with every mount it made. The image
is the data set's bin/ tree (busybox) written as an OCI archive and imported with
`ctr images import`; a boot is `ctr run --rm IMAGE NAME /bin/busybox true` (runc, containerd's
overlayfs snapshotter): what a container engine's boot costs on this disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from .. import _native
from .contenders import Contender

NAME = "ctr run"  # contenders.CTR_RUN
REF = "docker.io/storagekit/bench-busybox:latest"


def missing() -> str | None:
    """Why the baseline cannot run here, or None."""
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _blob(out: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"digest": digest, "size": len(data)}


def oci_archive(tree: Path, dest: Path) -> None:
    """An OCI image archive of one layer: tree as /<its name>."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add(tree, arcname=tree.name)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    with tarfile.open(dest, "w") as out:
        layer_desc = _blob(out, layer_bytes)
        config_desc = _blob(out, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
        }).encode()
        manifest_desc = _blob(out, manifest)
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_desc,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": REF,
                            "org.opencontainers.image.ref.name": "latest"}}]}).encode()
        for name, data in (("index.json", index),
                           ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


class CtrRun(Contender):
    """Boots only: the other workloads do not apply (containerd's snapshots are not reached
    through a path the workloads could write to)."""

    name = NAME
    kind = "baseline"
    boots_only = True

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        # a unix socket's path has at most 107 bytes: the sockets get a short directory
        self.sock_dir = Path(tempfile.mkdtemp(prefix="sk-bench-ctr-"))
        self.sock = str(self.sock_dir / "c.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.serial = 0

    def start(self, bin_tree: Path) -> None:
        h = self.home
        (h / "config.toml").write_text(
            f'version = 2\nroot = "{h}/root"\nstate = "{h}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            f'[debug]\n  address = "{self.sock_dir}/debug.sock"\n')
        with open(h / "containerd.log", "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(h / "config.toml")],
                                         stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start (see {h}/containerd.log)")
            time.sleep(0.05)
        archive = h / "image.tar"
        oci_archive(bin_tree, archive)
        self.ctr("images", "import", str(archive))
        self.boot()  # the first boot unpacks the snapshot: not a figure

    def ctr(self, *args: str) -> None:
        done = subprocess.run(["ctr", "-a", self.sock, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")

    def boot(self) -> None:
        self.serial += 1
        self.ctr("run", "--rm", REF, f"bench{self.serial}", "/bin/busybox", "true")

    def options(self) -> dict[str, str]:
        return {"runtime": "runc", "snapshotter": "overlayfs"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            _native.umount_tree(str(self.home), detach=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.home), str(self.sock_dir)],
                       check=False)
