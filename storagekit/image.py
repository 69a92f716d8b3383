"""Images on the layer store: import and export of OCI image layouts, `docker save` archives
and plain root filesystems (trees or tars, like `docker import`).

Layers are identified by OCI chain ID: importing two images that share layers stores those
layers once. Every blob is checked against its digest and every applied layer against the diff
ID in the image config; a mismatch is an error and leaves nothing of the import behind. An image
record keeps the image config (Env, Cmd, Entrypoint, WorkingDir, User, ...) and holds a
reference on its top layer, so the layers cannot be removed under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import namedtuple

from . import _native
from .errors import (
    ImageInUse,
    ImageNotFound,
    InvalidArchive,
    InvalidImage,
    LayerExists,
    StorageError,
)
from .owners import this_process
from .schema import Schema
from .store import Store, chain_id
from .streams import ProducerStream

# Booting a container only looks images up: what importing and exporting need (the archive
# readers in oci, hashing, temporary files, pathlib) is imported where it is used, not here.
TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any, BinaryIO

    from . import oci

SCHEMA = Schema("images", {"images"}, [
    # 1: one row per image name
    """
    CREATE TABLE IF NOT EXISTS images (
        name      TEXT PRIMARY KEY,
        id        TEXT NOT NULL,
        top_layer TEXT NOT NULL REFERENCES layers(id),
        config    TEXT NOT NULL,
        created   REAL NOT NULL
    )
    """,
])

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def normalize_name(name: str) -> str:
    """"busybox" -> "busybox:latest"; names with a tag or digest stay as they are. A name
    that is not a valid reference (storagekit/reference.py) raises InvalidImage."""
    from .reference import parse

    ref = parse(name)
    return name if ref.tag or ref.digest else f"{name}:latest"


def _with_tag(name: str) -> str:
    return name if "@" in name or ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def familiar(name: str) -> str:
    """"docker.io/library/busybox:latest" -> "busybox:latest"."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def qualified(name: str) -> str:
    """The fully qualified reference containerd expects: "busybox:latest" ->
    "docker.io/library/busybox:latest"."""
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def _layer_media_type(path: str) -> str:
    """A layer blob's OCI media type, from its first bytes (docker save gives none)."""
    from . import oci

    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x1f\x8b"):
        return oci.OCI_LAYER + "+gzip"
    if head == b"\x28\xb5\x2f\xfd":
        return oci.OCI_LAYER + "+zstd"
    return oci.OCI_LAYER


class Image(namedtuple("Image", "name id top_layer config created")):
    """An image of the store: its name, ID (the digest of its config), top layer, OCI
    config and the time it was imported."""

    name: str
    id: str               # digest of the image config
    top_layer: str
    config: dict[str, Any]
    created: float
    __slots__ = ()

    @property
    def runtime(self) -> dict[str, Any]:
        """The runtime part of the config: Env, Cmd, Entrypoint, WorkingDir, User, ..."""
        return self.config.get("config") or {}

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what --json prints)."""
        return self._asdict()


class Images:
    """The images of one store."""

    def __init__(self, store: Store) -> None:
        """The images of `store` (the images table is made on first use)."""
        self.store = store
        store.ensure_schema(SCHEMA)

    # ------------------------------------------------------------------ records

    def _image(self, row: sqlite3.Row) -> Image:
        return Image(row["name"], row["id"], row["top_layer"], json.loads(row["config"]),
                     row["created"])

    def get(self, name: str) -> Image:
        """The image named `name` (familiar `busybox`, `busybox:latest` or fully qualified).
        Raises ImageNotFound."""
        # Looking up needs no grammar (a name that is not valid matches nothing), and the
        # boot path does not pay for it (storagekit/bootpath.py): only ":latest" is added.
        candidates = [name, _with_tag(name), familiar(name), _with_tag(familiar(name))]
        for n in candidates:
            row = self.store.db.execute("SELECT * FROM images WHERE name = ?", (n,)).fetchone()
            if row:
                return self._image(row)
        raise ImageNotFound(name)

    def list(self) -> list[Image]:
        """Every image of the store, sorted by name."""
        rows = self.store.db.execute("SELECT * FROM images ORDER BY name").fetchall()
        return [self._image(r) for r in rows]

    def layers(self, image: Image) -> list[str]:
        """The image's layer ids, bottom first."""
        chain = [image.top_layer]
        while (parent := self.store.layer(chain[-1]).parent) is not None:
            chain.append(parent)
        return chain[::-1]

    def _record(self, name: str, image_id: str, top_layer: str, config: dict[str, Any],
                building: Sequence[str] = ()) -> Image:
        """Record the image on its top layer; `building`: the layers this import held
        (this process's references, dropped in the same transaction)."""
        owner = f"image {name}"
        with self.store.transaction():
            old = self.store.db.execute(
                "SELECT top_layer, id FROM images WHERE name = ?", (name,)).fetchone()
            if old:
                self.store.drop_ref(old["top_layer"], owner)
            self.store.add_ref(top_layer, owner)
            for layer_id in building:
                self.store.drop_ref(layer_id, this_process())
            self.store.db.execute(
                "INSERT INTO images(name, id, top_layer, config, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET id = excluded.id, top_layer = excluded.top_layer,"
                " config = excluded.config, created = excluded.created",
                (name, image_id, top_layer, json.dumps(config), time.time()),
            )
            if old and old["id"] != image_id:
                self._forget_unused(old["id"])
        if old and old["top_layer"] != top_layer:
            self.prune(old["top_layer"])
        return self.get(name)

    def remove(self, name: str, *, force: bool = False) -> list[str]:
        """Remove the image and every layer of it that nothing else uses; returns those.
        An image a container was made from (running or kept) is refused, as Docker's
        "conflict", unless force: then the name goes and its layers stay until the last
        such container does (Containers.remove prunes them)."""
        image = self.get(name)
        with self.store.transaction():
            users = self._containers_of(image)
            if users and not force:
                shown = ", ".join(users[:3]) + (", ..." if len(users) > 3 else "")
                raise ImageInUse(image.name, f"container {shown} is using it")
            self.store.db.execute("DELETE FROM images WHERE name = ?", (image.name,))
            self.store.drop_ref(image.top_layer, f"image {image.name}")
            self._forget_unused(image.id)
        return self.prune(image.top_layer)

    def _forget_unused(self, image_id: str) -> None:
        """Drop the original blobs of image_id once no name refers to it (in a transaction)."""
        ids = {r[0] for r in self.store.db.execute("SELECT DISTINCT id FROM images")}
        if image_id not in ids:
            self.content.forget(image_id, ids)

    def _containers_of(self, image: Image) -> list[str]:
        """The containers made from this image (by name, or on its top layer)."""
        if not self.store.has_schema("containers"):
            return []
        rows = self.store.db.execute(
            "SELECT c.name FROM containers c LEFT JOIN layers l ON l.id = c.layer "
            "WHERE c.image = ? OR l.parent = ? ORDER BY c.name",
            (image.name, image.top_layer)).fetchall()
        return [r[0] for r in rows]

    def prune(self, layer_id: str) -> list[str]:
        """Remove layer_id and then its parents, as long as nothing uses them."""
        removed = []
        current: str | None = layer_id
        while current is not None:
            layer = self.store.layer(current)
            if self.store.refs(current) or self.store.children(current):
                break
            if self.store.driver.refcount(current):
                break
            self.store.remove(current)
            removed.append(current)
            current = layer.parent
        return removed

    # ------------------------------------------------------------------ import

    def import_image(self, path: str | os.PathLike[str], name: str | None = None) -> Image:
        """Import an OCI image layout, a `docker save` archive or a root filesystem (a
        directory or a tar, plain or compressed) found at path; returns its image (the
        first, for an archive of several: see import_images)."""
        return self.import_images(path, name)[0]

    def import_images(self, path: str | os.PathLike[str],
                      name: str | None = None) -> list[Image]:
        """As import_image; a `docker save` archive of several images imports each under
        every tag it has (as docker load does), or with a name, the one of that tag."""
        from pathlib import Path

        from . import oci

        want = normalize_name(name) if name else None
        src = oci.open_source(path)
        try:
            fmt = oci.image_format(src)
            if fmt == "rootfs":
                return [self._import_rootfs(Path(path), src, name)]
            plans = [oci.plan_oci(src, want)] if fmt == "oci" else oci.plan_docker(src, want)
            done = []
            for plan in plans:
                names = [name] if name else (plan.tags or [plan.name or
                                                           plan.config_digest[7:19]])
                finals = list(dict.fromkeys(normalize_name(familiar(n)) for n in names))
                top, building = self._import_layers(src, plan)
                try:
                    self._keep_originals(src, plan)
                    done.append(self._record(finals[0], plan.config_digest, top, plan.config,
                                             building))
                except BaseException:
                    self._release(building)
                    raise
                for other in finals[1:]:
                    self._record(other, plan.config_digest, top, plan.config)
            return done
        finally:
            src.close()

    @property
    def content(self) -> Any:
        """The store's content store (storagekit/blobs.py): the blobs images came in as."""
        from .blobs import Content

        if not hasattr(self, "_content"):
            self._content = Content(self.store.root_dir)
        return self._content

    def _keep_originals(self, src: oci.Source, plan: oci.ImagePlan) -> None:
        """Keep the image's blobs as they came (compressed layers, config, manifest) so that
        an export gives back the same bytes and digests (see storagekit/blobs.py)."""
        from . import oci

        content = self.content
        if content.descriptors(plan.config_digest) is not None:
            return  # kept already, as the image first came in
        layers = []
        for blob in plan.layers:
            if blob.digest and content.has(blob.digest):
                digest, size = blob.digest, src.size(blob.name)
            else:
                with src.open(blob.name) as f:
                    digest, size = content.put(f, blob.digest)
            media = blob.media_type or _layer_media_type(content.path(digest))
            layers.append({"mediaType": media, "digest": digest, "size": size})
        cdigest, csize = content.put_bytes(src.read_bytes(plan.config_name))
        if cdigest != plan.config_digest:
            raise InvalidImage(src.label, f"the config changed while it was read ({cdigest})")
        manifest = None
        config_type = oci.OCI_CONFIG
        if plan.manifest is not None:
            data = src.read_bytes(oci.blob_name(plan.manifest["digest"]))
            digest, size = content.put_bytes(data)
            manifest = {"mediaType": plan.manifest["mediaType"], "digest": digest, "size": size}
            config_type = json.loads(data)["config"].get("mediaType") or oci.OCI_CONFIG
        content.record(plan.config_digest, {
            "manifest": manifest, "layers": layers,
            "config": {"mediaType": config_type, "digest": cdigest, "size": csize}})

    def _blob_stream(self, src: oci.Source, blob: oci.LayerBlob,
                     stack: contextlib.ExitStack) -> BinaryIO | int:
        from . import oci

        path = src.path(blob.name)
        if path is not None:  # a directory: check the file, then let native code read it
            if blob.digest:
                oci.verify_file(path, blob.digest, blob.size, src.label)
            f = stack.enter_context(open(path, "rb"))
            return f.fileno()
        raw = stack.enter_context(src.open(blob.name))
        if blob.digest:
            return oci.VerifyingReader(raw, blob.digest, blob.size, src.label)  # type: ignore[return-value]
        return raw

    def _import_layers(self, src: oci.Source, plan: oci.ImagePlan) -> tuple[str, list[str]]:
        """Make (or find) the image's layers, bottom first; returns the top layer and every
        layer of the chain, each held by a reference of this process until the image is
        recorded: if the process dies first, the next open of the store collects the layers
        that nothing else came to use (Store.collect)."""
        if not plan.layers:
            raise InvalidImage(src.label, "the image has no layers")
        owner = this_process()
        building: list[str] = []
        parent: str | None = None
        chain: str | None = None
        try:
            for blob in plan.layers:
                chain = chain_id(chain, blob.diff_id)
                layer_id = self._hold(chain, owner)
                if layer_id is None:  # not stored yet: make it
                    layer_id = chain.partition(":")[2]
                    with contextlib.ExitStack() as stack:
                        stream = self._blob_stream(src, blob, stack)
                        try:
                            self.store.create(layer_id, parent, diff=stream,
                                              expect_diff_id=blob.diff_id, ref=owner)
                        except LayerExists:  # made meanwhile by another importer
                            with self.store.transaction():
                                self.store.add_ref(layer_id, owner)
                building.append(layer_id)
                parent = layer_id
        except InvalidArchive as e:
            self._release(building)
            raise InvalidImage(src.label, f"layer {blob.diff_id}: {e.detail}") from None
        except BaseException:
            self._release(building)
            raise
        assert parent is not None
        return parent, building

    def _hold(self, chain: str, owner: str) -> str | None:
        """The stored layer with this chain ID, held by owner; None if there is none."""
        with self.store.transaction():
            existing = self.store.by_chain_id(chain)
            if existing is None:
                return None
            self.store.add_ref(existing.id, owner)
            return existing.id

    def _release(self, building: list[str]) -> None:
        """Drop this import's references; layers that nothing else uses go (top first)."""
        owner = this_process()
        with self.store.transaction():
            for layer_id in building:
                self.store.drop_ref(layer_id, owner)
        for layer_id in reversed(building):
            with contextlib.suppress(StorageError, OSError):
                if not self.store.refs(layer_id) and not self.store.children(layer_id):
                    self.store.remove(layer_id)

    def _import_rootfs(self, path: Path, src: oci.Source, name: str | None) -> Image:
        if name is None:
            raise InvalidImage(str(path), "a root filesystem needs a name (--name)")
        final = normalize_name(name)
        layer_id = os.urandom(16).hex()
        if path.is_dir():
            stream: Any = ProducerStream(lambda fd: _native.export_tar(str(path), fd))
        else:
            src.close()
            stream = open(path, "rb")
        try:
            layer = self.store.create(layer_id, None, diff=stream)
        except InvalidArchive as e:
            raise InvalidImage(str(path), e.detail) from None
        finally:
            stream.close()
        assert layer.diff_id is not None
        same = self.store.by_chain_id(layer.diff_id)
        if same is not None and same.id != layer_id:  # identical content already stored
            self.store.remove(layer_id)
            layer = same
        import datetime as dt
        import hashlib

        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": now,
            "config": {"Env": [DEFAULT_PATH]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": now, "created_by": f"storagekit image import {path.name}"}],
        }
        data = json.dumps(config, sort_keys=True).encode()
        return self._record(final, "sha256:" + hashlib.sha256(data).hexdigest(), layer.id, config)

    # ------------------------------------------------------------------ export

    def export(self, name: str, out: str | os.PathLike[str], *, compression: str | None = None,
               layout: str | None = None) -> dict[str, Any]:
        """Write the image as an OCI image layout that also carries a `docker save`
        manifest.json, so containerd (ctr images import) and docker load both take it.
        layout "dir" writes a directory, "tar" an archive; by default a path ending in "/"
        or an existing directory is a directory, anything else a tar ("-": stdout). A tar
        replaces its path only once it is complete (see fsutil.atomic_output)."""
        if compression not in (None, "none", "gzip", "zstd"):
            raise InvalidImage(str(out), f"unknown compression {compression!r}")
        import tempfile
        from pathlib import Path

        from .fsutil import atomic_output

        image = self.get(name)
        out = str(out)
        if layout is None:
            layout = "dir" if out.endswith("/") or os.path.isdir(out) else "tar"
        # The layout is staged beside a directory target (renamed into place at the end),
        # else in the temporary directory; either way registered with the store first, so
        # that a killed export's staging is collected (Store.scratch).
        where = (os.path.dirname(os.path.abspath(out.rstrip("/"))) if layout == "dir"
                 else tempfile.gettempdir())
        with self.store.scratch(f"{where}/.storagekit-export-{os.getpid()}-"
                                f"{os.urandom(6).hex()}") as staged:
            os.mkdir(staged, 0o700)
            staging = Path(staged)
            manifest_digest = self._write_layout(image, staging, compression)
            if layout == "dir":
                if os.path.exists(out) and os.listdir(out):
                    raise InvalidImage(out, "the target directory is not empty")
                if os.path.isdir(out):
                    os.rmdir(out)
                os.rename(staging, out)
            elif out == "-":
                _native.export_tar(str(staging), 1)
            else:  # whole or not at all; a FIFO or a device is written to as a stream
                with atomic_output(out) as fd:
                    _native.export_tar(str(staging), fd)
        return {"name": image.name, "manifest": manifest_digest, "output": out}

    def _write_layout(self, image: Image, root: Path, compression: str | None) -> str:
        """Write the layout; returns the manifest digest. Without a compression asked for,
        an image with its original blobs kept is written from them, byte for byte."""
        import copy
        import hashlib

        from . import oci

        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        kept = self.content.descriptors(image.id) if compression is None else None
        if kept is not None:
            return self._write_originals(image, root, kept)
        compression = compression or "none"
        layer_descs, diff_ids, layer_files = [], [], []
        suffix = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}[compression]
        for layer_id in self.layers(image):
            parent = self.store.layer(layer_id).parent
            tmp = blobs / f".layer-{layer_id}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                result = self.store.export(layer_id, fd, parent, compression)
            finally:
                os.close(fd)
            if compression == "none":
                digest = result["diff_id"]
            else:
                with open(tmp, "rb") as f:
                    digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            os.replace(tmp, blobs / digest[7:])
            diff_ids.append(result["diff_id"])
            layer_files.append(f"blobs/sha256/{digest[7:]}")
            layer_descs.append({"mediaType": oci.OCI_LAYER + suffix, "digest": digest,
                                "size": os.path.getsize(blobs / digest[7:])})
        config = copy.deepcopy(image.config)
        config.setdefault("rootfs", {})["type"] = "layers"
        config["rootfs"]["diff_ids"] = diff_ids
        config.setdefault("architecture", "amd64")
        config.setdefault("os", "linux")
        config_desc = self._put_json(blobs, config, oci.OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config_desc,
                    "layers": layer_descs}
        manifest_desc = self._put_json(blobs, manifest, oci.OCI_MANIFEST)
        self._write_index(image, root, manifest_desc, config["architecture"], config["os"],
                          layer_files, config_desc["digest"])
        return manifest_desc["digest"]

    def _write_originals(self, image: Image, root: Path, kept: dict[str, Any]) -> str:
        import shutil

        from . import oci

        blobs = root / "blobs" / "sha256"
        descs = [kept["config"], *kept["layers"], *([kept["manifest"]] if kept["manifest"]
                                                     else [])]
        for d in descs:
            shutil.copyfile(self.content.path(d["digest"]), blobs / d["digest"][7:])
        manifest_desc = kept["manifest"]
        if manifest_desc is None:  # a docker save has none: the one docker save would give
            manifest_desc = self._put_json(blobs, {
                "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": kept["config"],
                "layers": kept["layers"]}, oci.OCI_MANIFEST)
        self._write_index(image, root, dict(manifest_desc),
                          image.config.get("architecture", "amd64"),
                          image.config.get("os", "linux"),
                          [f"blobs/sha256/{d['digest'][7:]}" for d in kept["layers"]],
                          kept["config"]["digest"])
        return manifest_desc["digest"]

    @staticmethod
    def _write_index(image: Image, root: Path, manifest_desc: dict[str, Any], arch: str,
                     os_: str, layer_files: list[str], config_digest: str) -> None:
        """index.json (the image's names), oci-layout and docker's manifest.json."""
        from . import oci

        # containerd reads the full name, skopeo and umoci the tag (oci:DIR:TAG), as the
        # OCI image layout spec means org.opencontainers.image.ref.name
        from .reference import parse

        ref = parse(image.name)
        manifest_desc["annotations"] = {oci.CONTAINERD_NAME: qualified(image.name)}
        if ref.tag:
            manifest_desc["annotations"][oci.REF_NAME] = ref.tag
        manifest_desc["platform"] = {"architecture": arch, "os": os_}
        index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [manifest_desc]}
        (root / "index.json").write_text(json.dumps(index))
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        docker = [{"Config": f"blobs/sha256/{config_digest[7:]}",
                   "RepoTags": [image.name], "Layers": layer_files}]
        (root / "manifest.json").write_text(json.dumps(docker))

    @staticmethod
    def _put_json(blobs: Path, doc: dict[str, Any], media_type: str) -> dict[str, Any]:
        import hashlib

        data = json.dumps(doc, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}
