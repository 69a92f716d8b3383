"""The content store: the blobs an image came in as (its manifest, config and layer blobs,
compressed as they were), so that `image export` gives back the same bytes, and with them the
same image ID, manifest digest, layer digests and diff IDs — as containerd's content store and
Docker's image store keep them.

Layout under the store root (a compatibility contract):

    content/blobs/sha256/<hex>     one blob, named by the digest of its bytes
    content/images/<config hex>    JSON: the descriptors of one image (by image ID):
                                   {"manifest": desc | null, "config": desc, "layers": [desc]}

Every blob is written whole or not at all (a file without a name, O_TMPFILE, linked once its
digest is checked: a killed writer leaves nothing). A blob is collected when the last image
record that lists it goes (forget()).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, BinaryIO

from .errors import InvalidImage
from .fsutil import atomic_write, fsync_dir, link_anonymous

CHUNK = 1 << 20


class Content:
    """The content store of one store root."""

    def __init__(self, root_dir: str) -> None:
        self.dir = f"{root_dir}/content"
        self.blobs = f"{self.dir}/blobs/sha256"
        self.images = f"{self.dir}/images"
        for d in (self.blobs, self.images):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        algo, _, hexa = digest.partition(":")
        if algo != "sha256" or len(hexa) != 64 or not all(c in "0123456789abcdef" for c in hexa):
            raise InvalidImage("(content)", f"unsupported digest {digest[:80]!r}")
        return f"{self.blobs}/{hexa}"

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def put(self, stream: BinaryIO, digest: str | None = None) -> tuple[str, int]:
        """Store the bytes of stream; returns (digest, size). With digest given, bytes that
        do not match it are refused (InvalidImage) and nothing is stored. The bytes go to a
        file without a name that is linked under its digest once complete and checked: a
        writer killed on the way leaves nothing; two writers of one blob both succeed."""
        h = hashlib.sha256()
        size = 0
        fd = os.open(self.blobs, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o444)
        try:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            got = "sha256:" + h.hexdigest()
            if digest is not None and got != digest:
                raise InvalidImage("(content)", f"blob {digest} has digest {got}")
            if not self.has(got):
                os.fsync(fd)
                with contextlib.suppress(FileExistsError):  # stored meanwhile by another
                    link_anonymous(fd, self.blobs, got[7:])
                fsync_dir(self.blobs)
        finally:
            os.close(fd)
        return got, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        import io

        return self.put(io.BytesIO(data))

    # ------------------------------------------------------------------ image records

    def record(self, image_id: str, doc: dict[str, Any]) -> None:
        """Keep the descriptors of image_id's original blobs (all stored already)."""
        atomic_write(f"{self.images}/{image_id.partition(':')[2]}", json.dumps(doc))

    def descriptors(self, image_id: str) -> dict[str, Any] | None:
        """The record of image_id, if every blob it lists is still here."""
        try:
            with open(f"{self.images}/{image_id.partition(':')[2]}") as f:
                doc = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        descs = [doc["config"], *doc["layers"], *([doc["manifest"]] if doc["manifest"] else [])]
        if not all(self.has(d["digest"]) for d in descs):
            return None
        return doc

    def forget(self, image_id: str, keep_ids: set[str]) -> list[str]:
        """Drop image_id's record and every blob that no record of keep_ids lists."""
        doc = self.descriptors(image_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.images}/{image_id.partition(':')[2]}")
        if doc is None:
            return []
        kept = set()
        for other in keep_ids:
            odoc = self.descriptors(other)
            if odoc:
                kept |= _digests(odoc)
        gone = []
        for digest in _digests(doc) - kept:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(digest))
                gone.append(digest)
        return gone


def _digests(doc: dict[str, Any]) -> set[str]:
    descs = [doc["config"], *doc["layers"], *([doc["manifest"]] if doc["manifest"] else [])]
    return {d["digest"] for d in descs}

