"""Reading image archives: OCI image layouts and `docker save` archives, as a directory or a
tar (plain or compressed), reduced to one plan that the image store imports.

Every blob is addressed by digest; the plan carries the digests and sizes that must be checked
while the blobs are read (see VerifyingReader), and the diff IDs from the image config that
the applied layers must match.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InvalidImage
from .imageconfig import check_config

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_JSON = 16 << 20  # manifests and configs are small; refuse to parse a huge "json" blob
MAX_MEMBERS = 20_000  # more files than any image archive has: a root filesystem
MAX_LAYERS = 1000     # more layers than any driver stacks (overlay's limit is ~500)


# ------------------------------------------------------------------------------ sources


class Source:
    """The files of an image archive, by relative path."""

    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def path(self, name: str) -> str | None:
        """A real file path for name, when the source is a directory (fast path)."""
        return None

    def names(self) -> list[str]:
        raise NotImplementedError

    def missing(self, name: str) -> str:
        """Why name cannot be read as a file of the image."""
        return f"{name} is missing"

    def read_bytes(self, name: str, limit: int = MAX_JSON) -> bytes:
        """The whole of a small member (a manifest, a config): at most `limit` bytes are
        read, whatever size the archive claims."""
        if not self.exists(name):
            raise InvalidImage(self.label, self.missing(name))
        if self.size(name) > limit:
            raise InvalidImage(self.label, f"{name} is larger than {limit >> 20} MiB")
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidImage(self.label, f"{name} is larger than {limit >> 20} MiB")
        return data

    def read_json(self, name: str) -> Any:
        data = self.read_bytes(name)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidImage(self.label, f"{name} is not valid JSON: {e}") from None

    def close(self) -> None:
        pass


class DirSource(Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def _p(self, name: str) -> Path:
        p = (self.root / name).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise InvalidImage(self.label, f"{name} points outside the image directory")
        return p

    def exists(self, name: str) -> bool:
        return self._p(name).is_file()

    def missing(self, name: str) -> str:
        p = self._p(name)
        return f"{name} is not a regular file" if os.path.lexists(p) else f"{name} is missing"

    def open(self, name: str) -> BinaryIO:
        # O_NONBLOCK: a FIFO put in an image's place opens without waiting for a writer,
        # and is refused below rather than read from forever
        fd = os.open(self._p(name), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidImage(self.label, f"{name} is not a regular file")
        os.set_blocking(fd, True)
        return open(fd, "rb")

    def size(self, name: str) -> int:
        return self._p(name).stat().st_size

    def path(self, name: str) -> str | None:
        return str(self._p(name))

    def names(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()]


class TarSource(Source):
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        # An image archive has a few members per layer; a root filesystem tar can have
        # millions, and indexing each (tarfile keeps a TarInfo per member, ~600 bytes) took
        # 1.9 GB for a 7 MB archive. Past MAX_MEMBERS the scan stops: such a tar can only be
        # a root filesystem, which is applied as a stream.
        self.members: dict[str, tarfile.TarInfo] = {}
        self.others: set[str] = set()  # directories, FIFOs, devices: never image files
        self.truncated = False
        try:
            self.tar = tarfile.open(path, "r:*")
            while (m := self.tar.next()) is not None:
                if len(self.tar.members) > MAX_MEMBERS:
                    self.truncated = True
                    break
                key = os.path.normpath(m.name).lstrip("/")
                if m.isfile() or m.issym() or m.islnk():
                    self.members[key] = m
                else:
                    self.others.add(key)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise InvalidImage(self.label, f"cannot read the archive: {e}") from None

    def _m(self, name: str) -> tarfile.TarInfo:
        m = self.members.get(os.path.normpath(name).lstrip("/"))
        if m is None:
            raise InvalidImage(self.label, f"{name} is missing")
        return m

    def exists(self, name: str) -> bool:
        return os.path.normpath(name).lstrip("/") in self.members

    def open(self, name: str) -> BinaryIO:
        m = self._m(name)
        try:
            f = self.tar.extractfile(m)  # a link is followed inside the archive only
        except KeyError:
            raise InvalidImage(self.label, f"{name} links to {m.linkname[:100]!r}, which is "
                                           "not in the archive") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise InvalidImage(self.label, f"cannot read {name}: {e}") from None
        if f is None:
            raise InvalidImage(self.label, f"{name} is not a file")
        return f  # type: ignore[return-value]

    def missing(self, name: str) -> str:
        key = os.path.normpath(name).lstrip("/")
        return f"{name} is not a regular file" if key in self.others else f"{name} is missing"

    def size(self, name: str) -> int:
        return self._m(name).size

    def names(self) -> list[str]:
        return list(self.members)

    def close(self) -> None:
        self.tar.close()


def open_source(path: str | os.PathLike[str]) -> Source:
    p = Path(path)
    if p.is_dir():
        return DirSource(p)
    if not p.exists():
        raise FileNotFoundError(2, "No such file or directory", str(p))
    return TarSource(p)


# ------------------------------------------------------------------------------ digests


def blob_name(digest: str, label: str = "(image)") -> str:
    algo, _, hexa = digest.partition(":")
    hexdigits = set("0123456789abcdef")
    if {"sha256": 64, "sha512": 128}.get(algo) != len(hexa) or not set(hexa) <= hexdigits:
        raise InvalidImage(label, f"unsupported or malformed digest {digest[:100]!r}")
    return f"blobs/{algo}/{hexa}"


class VerifyingReader(io.RawIOBase):
    """Reads a blob and, at its end, checks its size and digest: a mismatch raises
    InvalidImage, which aborts whatever is consuming the stream."""

    def __init__(self, raw: BinaryIO, digest: str, size: int | None, label: str) -> None:
        super().__init__()
        self.raw, self.digest, self.expected_size, self.label = raw, digest, size, label
        self.hash = hashlib.new(digest.partition(":")[0])
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.hash.update(memoryview(buffer)[:n])
            self.seen += n
        else:
            self.check()
        return n

    def check(self) -> None:
        if self.expected_size is not None and self.seen != self.expected_size:
            raise InvalidImage(self.label, f"blob {self.digest} has {self.seen} bytes, "
                                           f"not {self.expected_size}")
        got = f"{self.hash.name}:{self.hash.hexdigest()}"
        if got != self.digest:
            raise InvalidImage(self.label, f"blob {self.digest} has digest {got}")


def verify_file(path: str, digest: str, size: int | None, label: str) -> None:
    with open(path, "rb") as f:
        h = hashlib.file_digest(f, digest.partition(":")[0])
    st = os.stat(path)
    if size is not None and st.st_size != size:
        raise InvalidImage(label, f"blob {digest} has {st.st_size} bytes, not {size}")
    if f"{h.name}:{h.hexdigest()}" != digest:
        raise InvalidImage(label, f"blob {digest} has digest {h.name}:{h.hexdigest()}")


# ------------------------------------------------------------------------------ plans


@dataclass
class LayerBlob:
    name: str             # file inside the source
    digest: str | None    # digest of the blob as stored (None: not addressed by digest)
    size: int | None
    diff_id: str          # digest of the uncompressed tar, from the config
    media_type: str | None = None


@dataclass
class ImagePlan:
    """What to import: the config and the layers bottom first."""

    name: str | None
    config: dict[str, Any]
    config_digest: str
    layers: list[LayerBlob] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # every name the archive gives the image
    config_name: str = ""                 # the config's file in the source
    manifest: dict[str, Any] | None = None  # the descriptor of the manifest (OCI layouts)


def _digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(src: Source, desc: Any) -> dict[str, Any]:
    """A descriptor with the spec's types: mediaType and digest strings, size a
    non-negative integer, annotations an object of strings, platform an object."""
    if not isinstance(desc, dict):
        raise InvalidImage(src.label, "a descriptor is not a JSON object")
    if not isinstance(desc.get("digest"), str):
        raise InvalidImage(src.label, "a descriptor has no digest")
    size = desc.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidImage(src.label, f"descriptor {desc['digest'][:80]}: size {size!r} is not "
                                      "a byte count")
    if not isinstance(desc.get("mediaType", ""), str):
        raise InvalidImage(src.label, "a descriptor's mediaType is not a string")
    ann = desc.get("annotations")
    if ann is not None and (not isinstance(ann, dict) or not all(
            isinstance(v, str) for v in ann.values())):
        raise InvalidImage(src.label, "a descriptor's annotations are not strings")
    if desc.get("platform") is not None and not isinstance(desc["platform"], dict):
        raise InvalidImage(src.label, "a descriptor's platform is not an object")
    return desc


def _read_blob_json(src: Source, desc: dict[str, Any]) -> tuple[Any, str]:
    digest = _descriptor(src, desc)["digest"]
    name = blob_name(digest, src.label)
    if not src.exists(name):
        raise InvalidImage(src.label, f"blob {digest} is missing")
    if src.size(name) > MAX_JSON:
        raise InvalidImage(src.label, f"blob {digest} is too large for a manifest or config")
    with src.open(name) as f:
        data = f.read()
    if _digest_bytes(data) != digest:
        raise InvalidImage(src.label, f"blob {digest} has digest {_digest_bytes(data)}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidImage(src.label, f"blob {digest} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidImage(src.label, f"blob {digest} is not a JSON object")
    return doc, digest


def _platform_ok(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform")
    return not plat or (plat.get("os") == "linux" and plat.get("architecture") in ("amd64", None))


def _descriptor_name(desc: dict[str, Any]) -> str | None:
    ann = desc.get("annotations") or {}
    return ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)


def _pick_manifest(src: Source, index: dict[str, Any], want: str | None,
                   depth: int = 0) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    if depth > 4:
        raise InvalidImage(src.label, "indexes nest too deeply")
    if not isinstance(index, dict):
        raise InvalidImage(src.label, "the index is not a JSON object")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise InvalidImage(src.label, "the index lists no manifests")
    candidates = [d for d in map(lambda d: _descriptor(src, d), manifests) if _platform_ok(d)]
    if want:
        named = [d for d in candidates if _descriptor_name(d) in (want, want.rsplit(":", 1)[-1])]
        candidates = named or candidates
    if not candidates:
        raise InvalidImage(src.label, "no manifest for linux/amd64")
    desc = candidates[0]
    doc, _ = _read_blob_json(src, desc)
    name = _descriptor_name(desc)
    if desc.get("mediaType") in INDEXES or doc.get("mediaType") in INDEXES:
        inner, inner_name, inner_desc = _pick_manifest(src, doc, want, depth + 1)
        return inner, inner_name or name, inner_desc
    return doc, name, desc


def _config_diff_ids(src: Source, config: dict[str, Any], n_layers: int) -> list[str]:
    check_config(src.label, config)
    if n_layers > MAX_LAYERS:
        raise InvalidImage(src.label, f"the image has {n_layers} layers, more than "
                                      f"{MAX_LAYERS}")
    diff_ids = config["rootfs"].get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != n_layers:
        n = len(diff_ids) if isinstance(diff_ids, list) else 0
        raise InvalidImage(src.label, f"the config lists {n} diff IDs for {n_layers} layers")
    for d in diff_ids:
        if not isinstance(d, str):
            raise InvalidImage(src.label, f"the config's diff ID {d!r:.40} is not a string")
        blob_name(d, src.label)  # validates the form
    return diff_ids


def plan_oci(src: Source, want: str | None) -> ImagePlan:
    layout = src.read_json("oci-layout")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise InvalidImage(src.label, "oci-layout is not imageLayoutVersion 1.0.0")
    manifest, name, mdesc = _pick_manifest(src, src.read_json("index.json"), want)
    cdesc = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(cdesc, dict) or not isinstance(layers, list):
        raise InvalidImage(src.label, "the manifest has no config or no layers")
    if not all(isinstance(d, dict) for d in layers):
        raise InvalidImage(src.label, "a layer descriptor is not a JSON object")
    config, cdigest = _read_blob_json(src, cdesc)
    diff_ids = _config_diff_ids(src, config, len(layers))
    blobs = []
    for desc, diff_id in zip(layers, diff_ids, strict=True):
        mt = _descriptor(src, desc).get("mediaType", "")
        if not (mt.startswith(OCI_LAYER) or mt.startswith(DOCKER_LAYER)):
            raise InvalidImage(src.label, f"unsupported layer media type {mt!r}")
        name_ = blob_name(desc["digest"], src.label)
        if not src.exists(name_):
            raise InvalidImage(src.label, f"layer blob {desc['digest']} is missing")
        blobs.append(LayerBlob(name_, desc["digest"], desc.get("size"), diff_id, mt))
    if name and ":" not in name and "/" not in name and want is None:
        name = None  # a bare tag ("latest") is not an image name
    return ImagePlan(name, config, cdigest, blobs, config_name=blob_name(cdigest),
                     manifest={"mediaType": mdesc.get("mediaType") or manifest.get(
                         "mediaType") or OCI_MANIFEST, "digest": mdesc["digest"]})


def _docker_entries(src: Source, want: str | None) -> list[dict[str, Any]]:
    """The entries of manifest.json to import: every image, or the one tagged `want` (an
    archive of one image may be given any name)."""
    from .image import familiar, normalize_name

    manifest = src.read_json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise InvalidImage(src.label, "manifest.json lists no images")
    if not all(isinstance(e, dict) for e in manifest):
        raise InvalidImage(src.label, "manifest.json has an entry that is not an object")
    if want is None:
        return manifest
    wanted = normalize_name(familiar(want))
    named = [e for e in manifest if wanted in
             [normalize_name(familiar(t)) for t in _repo_tags(src, e)]]
    if named:
        return named[:1]
    if len(manifest) == 1:
        return manifest
    tags = [t for e in manifest for t in _repo_tags(src, e)]
    raise InvalidImage(src.label, f"no image {want} among the archive's {len(manifest)} "
                                  f"({', '.join(tags[:5]) or 'untagged'})")


def _repo_tags(src: Source, entry: dict[str, Any]) -> list[str]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidImage(src.label, "manifest.json: RepoTags is not a list of names")
    return tags


def plan_docker(src: Source, want: str | None) -> list[ImagePlan]:
    """One plan per image of a `docker save` archive (or the one tagged `want`)."""
    plans = []
    for entry in _docker_entries(src, want):
        config_name = entry.get("Config")
        layer_names = entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(
                isinstance(n, str) for n in layer_names):
            raise InvalidImage(src.label, "manifest.json has no Config or Layers")
        data = src.read_bytes(config_name)
        try:
            config = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidImage(src.label, f"{config_name} is not valid JSON: {e}") from None
        diff_ids = _config_diff_ids(src, config, len(layer_names))
        blobs = []
        for lname, diff_id in zip(layer_names, diff_ids, strict=True):
            if not src.exists(lname):
                raise InvalidImage(src.label, f"layer {lname} is missing")
            # docker save names blobs by digest in newer versions; the diff ID check covers both
            blobs.append(LayerBlob(lname, None, None, diff_id))
        tags = _repo_tags(src, entry)
        plans.append(ImagePlan(tags[0] if tags else None, config, _digest_bytes(data), blobs,
                               tags, config_name=config_name))
    return plans


def image_format(src: Source) -> str:
    """"oci", "docker" or "rootfs" (a plain root filesystem)."""
    if getattr(src, "truncated", False):
        return "rootfs"
    if src.exists("oci-layout") and src.exists("index.json"):
        return "oci"
    if src.exists("manifest.json"):
        return "docker"
    return "rootfs"
