"""Layers as records: what a layer is (Layer), its content identity (OCI diff and chain IDs),
its kinds and labels, and the named markers the store's methods take.

Kinds follow containerd: ``committed`` (an image layer: read-only once made), ``active`` (a
read-write layer, a container's) and ``view`` (a read-only layer that cannot be a parent).
Content identity follows OCI: the diff ID is the digest of the layer's uncompressed tar, the
chain ID identifies the layer together with all its parents.

On a container's boot path: it imports only os and collections.
"""

from __future__ import annotations

import os
from collections import namedtuple

from .errors import InvalidArgument

TYPE_CHECKING = False  # see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

KINDS = ("committed", "active", "view")


class _Sentinel:
    """A named marker argument (printed by its name in help() and reprs)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Use the layer's recorded parent (the default for diffs).
PARENT = _Sentinel("PARENT")
#: Keep what the layer has (Store.commit's name).
KEEP = _Sentinel("KEEP")


def default_root() -> str:
    """STORAGEKIT_ROOT, else /var/lib/storagekit for root, else ~/.local/share/storagekit."""
    env = os.environ.get("STORAGEKIT_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/storagekit"
    return os.path.join(os.path.expanduser("~"), ".local/share/storagekit")


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    """OCI ChainID: the diff ID for a base layer, else digest(parent chain + " " + diff ID)."""
    if parent_chain is None:
        return diff_id
    import hashlib

    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def chain_of(parent: str | None, parent_chain: str | None, diff_id: str) -> str | None:
    """A layer's chain ID from its diff ID: a base layer's is its diff ID; a layer on a parent
    with a chain ID chains onto it; on a parent without one (its content came from several
    tars, or from a container) the layer has none either."""
    if parent is None or parent_chain:
        return chain_id(parent_chain, diff_id)
    return None


class Layer(namedtuple("Layer",
                       "id parent kind name diff_id chain_id size created labels updated")):
    """A layer's record. `created` and `updated` are Unix times; `updated` is when its kind,
    content or labels last changed."""

    id: str
    parent: str | None
    kind: str
    name: str | None
    diff_id: str | None
    chain_id: str | None
    size: int
    created: float
    labels: dict[str, str]
    updated: float
    __slots__ = ()

    def __new__(cls, id: str, parent: str | None, kind: str, name: str | None,
                diff_id: str | None, chain_id: str | None, size: int, created: float,
                labels: dict[str, str] | None = None, updated: float | None = None) -> Layer:
        return super().__new__(cls, id, parent, kind, name, diff_id, chain_id, size, created,
                               dict(labels or {}), created if updated is None else updated)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what --json prints)."""
        return self._asdict()


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for k, v in (labels or {}).items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise InvalidArgument(f"labels must map non-empty strings to strings, got {k!r}")
        if len(k) + len(v) > 4096:  # containerd's limit for a label
            raise InvalidArgument(f"label {k!r} is longer than 4096 bytes with its value")
        out[k] = v
    return out
