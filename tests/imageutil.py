"""Build image archives for tests the way registries and `docker save` lay them out, written
independently of storagekit's own exporter."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from treeutil import make_tar


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return data


def image_config(diff_ids: list[str], **runtime: Any) -> dict[str, Any]:
    return {
        "architecture": "amd64", "os": "linux",
        "config": runtime or {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def write_oci(root: Path, layers: list[bytes], *, name: str | None = "test:1",
              compression: str = "gzip", runtime: dict[str, Any] | None = None,
              config_override: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OCI image layout directory. Returns the digests written."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        d = sha(data)
        (blobs / d[7:]).write_bytes(data)
        return d

    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[compression]
    descs = []
    for layer in layers:
        blob = compress(layer, compression)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + suffix,
                      "digest": put(blob), "size": len(blob)})
    config = config_override or image_config([sha(x) for x in layers], **(runtime or {}))
    cbytes = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": put(cbytes), "size": len(cbytes)},
                "layers": descs}
    mbytes = json.dumps(manifest).encode()
    mdesc: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "digest": put(mbytes), "size": len(mbytes)}
    if name:
        mdesc["annotations"] = {"org.opencontainers.image.ref.name": name}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return {"config": sha(cbytes), "manifest": mdesc["digest"], "layers": descs}


def write_docker_save(path: Path, layers: list[bytes], tag: str = "saved:1",
                      runtime: dict[str, Any] | None = None) -> None:
    """A `docker save` archive (manifest.json, <id>/layer.tar, <config>.json)."""
    config = json.dumps(image_config([sha(x) for x in layers], **(runtime or {}))).encode()
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))

        names = []
        for i, layer in enumerate(layers):
            n = f"{hashlib.sha256(str(i).encode()).hexdigest()}/layer.tar"
            add(n, layer)
            names.append(n)
        add(f"{sha(config)[7:]}.json", config)
        add("manifest.json", json.dumps(
            [{"Config": f"{sha(config)[7:]}.json", "RepoTags": [tag], "Layers": names}]).encode())


def three_layers() -> list[bytes]:
    """Three layers with a deleted file, an opaque directory and a replaced file."""
    return [
        make_tar([
            {"name": "etc", "type": "dir"},
            {"name": "etc/motd", "data": b"layer 1\n"},
            {"name": "etc/doomed", "data": b"deleted in layer 2\n"},
            {"name": "app", "type": "dir"},
            {"name": "app/old1", "data": b"old"},
            {"name": "app/old2", "data": b"old"},
            {"name": "bin", "type": "dir"},
            {"name": "bin/tool", "data": b"v1", "mode": 0o755},
        ]),
        make_tar([
            {"name": "etc", "type": "dir"},
            {"name": "etc/.wh.doomed", "data": b""},
            {"name": "app", "type": "dir"},
            {"name": "app/.wh..wh..opq", "data": b""},
            {"name": "app/new", "data": b"new in layer 2"},
        ]),
        make_tar([
            {"name": "bin", "type": "dir"},
            {"name": "bin/tool", "data": b"v3 replaced", "mode": 0o755},
            {"name": "etc", "type": "dir"},
            {"name": "etc/motd", "type": "symlink", "link": "/etc/issue"},
        ]),
    ]
