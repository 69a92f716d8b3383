"""containerd's snapshotter semantics on storagekit's Store: what the gRPC server calls (in
worker threads), in plain Python terms. The server keeps no state of its own: every snapshot
is a store layer (keys.py says how keys become names), its kind, parent, labels and times
are the layer's.

containerd's terms: a *key* names an active or view snapshot, a *name* a committed one; both
share one key space per namespace. Prepare makes an active (read-write) layer on a committed
parent, View a view (read-only) one, Commit turns an active layer committed in place and
gives it its new name, in O(1) on every driver (Store.commit).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from storagekit import _native
from storagekit.driver import Mount
from storagekit.errors import InvalidArgument, LayerExists, LayerInUse, LayerNotFound, StorageError
from storagekit.layer import Layer
from storagekit.store import Store

from . import filters, inuse, keys

#: containerd's limit on a label: its key and value together, in bytes (labels.Validate)
MAX_LABEL = 4096


def check_labels(labels: Mapping[str, str]) -> None:
    """containerd's rule for labels, in bytes of UTF-8 (the store counts characters)."""
    for k, v in labels.items():
        if len(k.encode()) + len(v.encode()) > MAX_LABEL:
            raise InvalidArgument(f"label {k[:100]!r} is longer than {MAX_LABEL} bytes with "
                                  "its value")


class SnapshotNotFound(LayerNotFound):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.args = (f"snapshot {key[:200]!r} does not exist",)


class SnapshotExists(LayerExists):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.args = (f"snapshot {key[:200]!r} already exists",)


class FailedPrecondition(StorageError):
    """The snapshot is not in a state that allows the request (containerd's
    ErrFailedPrecondition): committing what is not active, a key found in several
    namespaces by a request without one."""


@dataclass(frozen=True)
class Info:
    """A snapshot as containerd's snapshots.Info has it."""

    name: str
    parent: str
    kind: str  # "active", "view" or "committed"
    created: float
    updated: float
    labels: dict[str, str]


class SnapshotService:
    """The snapshotter operations on one Store. Thread-safe (the Store is).

    `namespace` is containerd's (the ``containerd-namespace`` header), None when a request
    has none: see keys.py."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def driver_name(self) -> str:
        return self.store.driver_name

    # ------------------------------------------------------------------ finding

    def _find(self, namespace: str | None, key: str) -> Layer:
        keys.check_key(key)
        if namespace is not None:
            return self._by_name(keys.layer_name(namespace, key), key)
        with contextlib.suppress(SnapshotNotFound):
            return self._by_name(keys.layer_name("", key), key)
        with self.store.transaction():
            # the first "/" of a name ends its namespace (a namespace has none)
            rows = self.store.db.execute(
                "SELECT id FROM layers WHERE state = 'ready' AND name LIKE ? ESCAPE '\\' "
                "AND substr(name, instr(name, '/') + 1) = ?",
                (keys.PREFIX.replace("_", "\\_").replace("%", "\\%") + "%", key)).fetchall()
        if len(rows) > 1:
            raise FailedPrecondition(f"snapshot {key[:200]!r} exists in several namespaces: "
                                     "name one (the containerd-namespace header)")
        if not rows:
            raise SnapshotNotFound(key)
        return self.store.layer(rows[0]["id"])

    def _by_name(self, name: str, key: str) -> Layer:
        try:
            layer = self.store.layer(name)
        except LayerNotFound:
            raise SnapshotNotFound(key) from None
        if layer.name != name:  # an id that happens to be spelt like the name
            raise SnapshotNotFound(key)
        return layer

    def _info(self, layer: Layer) -> Info:
        _, key = keys.split_name(layer.name) or ("", layer.id)
        parent = ""
        if layer.parent is not None:
            with contextlib.suppress(LayerNotFound):
                parent = (keys.split_name(self.store.layer(layer.parent).name) or ("", ""))[1]
        return Info(key, parent, layer.kind, layer.created, layer.updated, layer.labels)

    # ------------------------------------------------------------------ making

    def _create(self, namespace: str | None, key: str, parent: str, labels: Mapping[str, str],
                kind: str) -> list[Mount]:
        keys.check_key(key)
        check_labels(labels)
        parent_id = None
        if parent:
            p = self._find(namespace, parent)
            if p.kind != "committed":
                what = "a view" if p.kind == "view" else "active"
                raise InvalidArgument(f"parent {parent[:200]!r} is {what}, not a committed "
                                      "snapshot")
            parent_id = p.id
            if namespace is None:  # the namespace the parent is in
                namespace = (keys.split_name(p.name) or ("", ""))[0]
        name = keys.layer_name(namespace or "", key)
        layer_id = keys.new_layer_id()
        if parent_id is not None and self.store.driver_name == "devicemapper":
            # A thin snapshot copies the parent's blocks as they are on the device. containerd
            # unmounts with MNT_DETACH and commits at once: a filesystem still alive (held
            # open, or copied into a mount namespace made meanwhile) may not have written its
            # data back yet, and the driver cannot see it to freeze it. sync(2) reaches every
            # filesystem, wherever it is still mounted.
            os.sync()
        try:
            self.store.create(layer_id, parent_id, kind=kind, name=name, labels=labels)
        except LayerExists:
            raise SnapshotExists(key) from None
        except LayerNotFound:  # the parent went meanwhile
            raise SnapshotNotFound(parent) from None
        try:
            return self.store.mounts(layer_id)
        except BaseException:
            # no mounts, no snapshot: containerd takes the Prepare as failed and tries
            # again with the same key
            with contextlib.suppress(StorageError, OSError):
                self.store.remove(layer_id)
            raise

    def prepare(self, namespace: str | None, key: str, parent: str,
                labels: Mapping[str, str]) -> list[Mount]:
        """A new active snapshot on the committed `parent` ("" for none); its mounts."""
        return self._create(namespace, key, parent, labels, "active")

    def view(self, namespace: str | None, key: str, parent: str,
             labels: Mapping[str, str]) -> list[Mount]:
        """A new read-only view of the committed `parent`; its mounts."""
        return self._create(namespace, key, parent, labels, "view")

    def mounts(self, namespace: str | None, key: str) -> list[Mount]:
        """The mounts of a snapshot (read-only unless it is active), as the driver gives
        them. The union engine's are ``fuse.storagekit-union``: containerd mounts them
        through mount.fuse (its helper rule for ``fuse.``/``fuse3.`` types), and so does
        mount(8) with the lines `ctr snapshots mounts` prints; a ``fuse3.`` type would not
        do for mount(8), which hands mount.fuse3 the whole type as the program to run."""
        return self.store.mounts(self._find(namespace, key).id)

    def commit(self, namespace: str | None, name: str, key: str,
               labels: Mapping[str, str]) -> None:
        """The active snapshot `key` becomes the committed `name`, with `labels` as its labels
        (as containerd's Commit: the active snapshot's own labels do not carry over)."""
        keys.check_key(name, "name")
        check_labels(labels)
        layer = self._find(namespace, key)
        if layer.kind != "active":
            raise FailedPrecondition(f"snapshot {key[:200]!r} is {layer.kind}, not active: "
                                     "only an active snapshot can be committed")
        own_namespace = (keys.split_name(layer.name) or ("", ""))[0]
        try:
            with self.store.transaction():
                self.store.commit(layer.id, name=keys.layer_name(own_namespace, name),
                                  labels=dict(labels))
                # containerd's committed snapshot is a new record, created at the commit
                # (its test suite checks created == updated right after it)
                self.store.db.execute("UPDATE layers SET created = updated WHERE id = ?",
                                      (layer.id,))
        except LayerExists:
            raise SnapshotExists(name) from None

    def remove(self, namespace: str | None, key: str) -> None:
        """Remove a snapshot that has no children and is not mounted (FailedPrecondition
        otherwise: see inuse.py)."""
        layer = self._find(namespace, key)
        if not self.store.children(layer.id):  # (with children: the store says so)
            mounted = inuse.users(self.store.mounts(layer.id))
            if mounted:
                raise FailedPrecondition(f"cannot remove snapshot {key[:200]!r}: it is mounted "
                                         f"({', '.join(mounted[:3])}); unmount it first")
        try:
            self.store.remove(layer.id)
        except LayerInUse as e:
            raise FailedPrecondition(f"cannot remove snapshot {key[:200]!r}: {e.reason}") from None
        except LayerNotFound:
            raise SnapshotNotFound(key) from None

    # ------------------------------------------------------------------ reading

    def stat(self, namespace: str | None, key: str) -> Info:
        return self._info(self._find(namespace, key))

    def update(self, namespace: str | None, key: str, labels: Mapping[str, str],
               paths: Sequence[str]) -> Info:
        """Update the labels as containerd's field paths say: "labels" (all of them),
        "labels.<key>" (that one: set, or removed if `labels` has none), none (all)."""
        for path in paths:
            if path != "labels" and not path.startswith("labels."):
                raise InvalidArgument(f"cannot update {path[:200]!r} field on snapshot "
                                      "(only labels are mutable)")
        check_labels(labels)
        with self.store.transaction():
            layer = self._find(namespace, key)
            if not paths or "labels" in paths:
                new = dict(labels)
            else:
                new = dict(layer.labels)
                for path in paths:
                    label = path[len("labels."):]
                    if label in labels:
                        new[label] = labels[label]
                    else:
                        new.pop(label, None)
            layer = self.store.set_labels(layer.id, new, replace=True)
        return self._info(layer)

    def list(self, namespace: str | None, filter_strings: Sequence[str]) -> Iterator[Info]:
        """The snapshots of the namespace (every namespace's without one) that match any of
        the filters."""
        match = filters.parse(list(filter_strings))
        layers = self.store.layers()
        names = {la.id: keys.split_name(la.name) for la in layers}
        for layer in layers:
            split = names[layer.id]
            if split is None or (namespace is not None and split[0] != namespace):
                continue
            parent = names.get(layer.parent) if layer.parent else None
            info = Info(split[1], parent[1] if parent else "", layer.kind, layer.created,
                        layer.updated, layer.labels)
            if match(filters.snapshot_fields(info.kind, info.name, info.parent, info.labels)):
                yield info

    def usage(self, namespace: str | None, key: str) -> tuple[int, int]:
        """(bytes, inodes) the snapshot itself takes, its parents' aside: its own directory
        where the driver has one (overlay, aufs), its whole tree on vfs (each layer there is
        a full copy), else what its changes against its parent add up to."""
        layer = self._find(namespace, key)
        driver = self.store.driver
        own = driver.own_dir(layer.id)
        if own is None and self.store.driver_name == "vfs":
            own = driver.path(layer.id)
        if own is not None:
            size, inodes = _native.tree_size(own)
            return size, inodes
        changes = self.store.changes(layer.id)
        return self.store.diff_size(layer.id), sum(c.kind != 2 for c in changes)

    def cleanup(self) -> list[str]:
        """What dead processes and interrupted requests left behind, removed."""
        return self.store.prune()

    def close(self) -> None:
        self.store.close()
