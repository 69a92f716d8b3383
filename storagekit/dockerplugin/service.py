"""The graphdriver operations, each mapped onto storagekit's Store: what the HTTP server calls
(in worker threads: every operation may block on a mount, a lock or a long apply).

Docker's layer ids are store layer ids as they are (64 hex digits, "<id>-init", or any other
id the store accepts): a read-only (image) layer Docker creates is a ``committed`` layer, a
read-write one (a container's, its init layer) an ``active`` one. Everything the plugin knows
lives in the store — layers, parents, mounts and their counts — so either side can restart,
in any order: dockerd keeps its own layer metadata and asks for the same ids again, and a
restarted plugin finds them in the store. The one thing dockerd tells only once is Init (its
--storage-opt values): those are recorded in the store too (table ``dockerplugin_init``), so a
plugin restarted under a running dockerd opens the store the way dockerd asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from storagekit import registry, schema
from storagekit.errors import DriverUnsupported, InvalidArgument, LayerNotFound, StoreError
from storagekit.store import Store

from .protocol import IdMap

# The plugin's own record in the store: what dockerd's last Init asked for.
SCHEMA = schema.Schema("dockerplugin", {"dockerplugin_init"}, [
    # 1: key/value pairs: "opts" (a JSON list of "key=value"), "home"
    """
    CREATE TABLE IF NOT EXISTS dockerplugin_init (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
])

#: The label of a layer that Docker's Create made, until it is committed (see create()).
CREATED = "storagekit.docker.created"


def parse_options(items: list[str], what: str) -> dict[str, str]:
    """["key=value", ...] as a dict; InvalidArgument for an item without "="."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgument(f"{what} must look like KEY=VALUE, not {item!r}")
        out[key] = value.strip()
    return out


def _check_driver(name: str, root: str, options: Mapping[str, str]) -> None:
    """What can be checked of a driver and its options without opening a store."""
    cls = registry.driver_class(name)
    unknown = sorted(set(options) - set(cls.option_help))
    if unknown:
        known = ", ".join(sorted(cls.option_help)) or "none"
        raise InvalidArgument(f"unknown option {unknown[0]!r} for driver {name!r} (known: {known})")
    ok, reason = cls.probe(root)
    if not ok:
        raise DriverUnsupported(name, reason)


class GraphDriverService:
    """The Store behind the plugin, and the graphdriver operations on it. Thread-safe: the
    Store is; reopening it (an Init with other options) waits until no operation uses it.

    When is the store opened? An existing store at once (so a bad root or option fails at
    start, in one line). A new one only when dockerd initialises the plugin, so that
    dockerd's --storage-opt shape it (a devicemapper pool is made with its first open);
    until then the driver and the option names are checked, nothing is written. A request
    that comes before any Init (a plugin restarted under a running dockerd) opens the store
    with the options dockerd's last Init recorded."""

    def __init__(self, root: str, driver: str | None, options: Mapping[str, str]) -> None:
        self.root = os.path.abspath(root)
        #: Driver options from the plugin's command line; dockerd's Init may add others.
        self.command_options = dict(options)
        #: The options the store is (or will be) open with.
        self.options = dict(options)
        self._cond = threading.Condition()
        self._store: Store | None = None
        self._users = 0
        self._swapping = False
        self._closed = False
        self._home = ""
        if os.path.exists(os.path.join(self.root, "store.db")):
            self._store = self._open_as_recorded(driver)
            self.driver_name = self._store.driver_name
        else:
            self.driver_name = driver or registry.best(self.root)
            _check_driver(self.driver_name, self.root, self.command_options)

    # ------------------------------------------------------------------ the store

    def _open(self, driver: str | None, options: dict[str, str]) -> Store:
        store = Store(self.root, driver, options)
        try:
            store.ensure_schema(SCHEMA)
        except BaseException:
            store.close()
            raise
        return store

    def _open_as_recorded(self, driver: str | None) -> Store:
        """Open the store with the command line's options and those dockerd's last Init
        recorded (the command line wins: it is the newer word)."""
        store = self._open(driver, self.command_options)
        recorded = dict(store.db.execute("SELECT key, value FROM dockerplugin_init"))
        self._home = recorded.get("home", "")
        init_opts = parse_options(json.loads(recorded.get("opts", "[]")), "a recorded option")
        wanted = init_opts | self.command_options
        if wanted != self.command_options:
            store.close()
            store = self._open(store.driver_name, wanted)
        self.options = wanted
        return store

    @contextlib.contextmanager
    def _using(self) -> Iterator[Store]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            if self._closed:
                raise StoreError("the plugin is stopping")
            if self._store is None:  # nobody opened it yet: dockerd never called Init
                self._store = self._open_as_recorded(self.driver_name)
            self._users += 1
            store = self._store
        try:
            yield store
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def _reopen(self, options: dict[str, str]) -> None:
        """(Re)open the store with these driver options, once no operation uses the old one
        (new ones wait); the old one stays if the new one cannot be opened."""
        fresh = self._open(self.driver_name, options)
        with self._cond:
            self._swapping = True
            try:
                while self._users:
                    self._cond.wait()
                old, self._store, self.options = self._store, fresh, dict(options)
            finally:
                self._swapping = False
                self._cond.notify_all()
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._users:
                self._cond.wait()
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # ------------------------------------------------------------------ Init, Capabilities

    def init(self, home: str, opts: list[str], uid_maps: list[IdMap],
             gid_maps: list[IdMap]) -> None:
        for what, maps in (("UID", uid_maps), ("GID", gid_maps)):
            if any(not m.identity for m in maps):
                raise InvalidArgument(
                    f"{what} remapping (dockerd --userns-remap: {maps}) is not supported: the "
                    "store keeps files owned as their layers say")
        requested = parse_options(opts, "a --storage-opt")
        for key, value in requested.items():
            if key in self.command_options and self.command_options[key] != value:
                raise InvalidArgument(
                    f"--storage-opt {key}={value} contradicts the plugin's own "
                    f"-o {key}={self.command_options[key]}")
        wanted = self.command_options | requested
        if self._store is None or wanted != self.options:
            self._reopen(wanted)  # an unknown or malformed option fails here, in one line
        with self._using() as store, store.transaction():
            store.db.executemany(
                "INSERT INTO dockerplugin_init(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [("opts", json.dumps(opts)), ("home", home)])
        self._home = home

    @staticmethod
    def capabilities() -> dict[str, bool]:
        # ReproducesExactDiffs tells dockerd to trust Diff to give back, byte for byte, the tar
        # a layer was applied from: it then keeps no tar-split record and checks what Diff
        # returns against the layer's diff ID (docker save, docker push). No driver here can
        # promise that: an export is byte-stable (the same bytes every time), but it is
        # storagekit's own tar, not the one dockerd sent (another writer, entry order, header
        # format). So dockerd keeps tar-split and rebuilds the original tar from it.
        return {"ReproducesExactDiffs": False}

    # ------------------------------------------------------------------ layers

    def create(self, layer_id: str, parent: str | None, storage_opt: Mapping[str, str],
               rw: bool) -> None:
        if storage_opt:
            key = sorted(storage_opt)[0]
            raise InvalidArgument(
                f"--storage-opt {key} is not supported by storagekit's {self.driver_name} "
                "driver (layers are sized by the driver's own options)")
        with self._using() as store:
            if parent is not None:
                self._seal(store, parent)
            # Docker's Create makes an image layer that is filled after its creation — by
            # ApplyDiff (dockerd), or by writes through Get (moby's graphtest, which Docker's
            # own drivers pass: overlay2 makes a layer read-only only once it has a child).
            # So it starts as a writable store layer, marked Docker's, and is committed (made
            # read-only in place) once its diff is applied or a child is made on it.
            store.create(layer_id, parent, kind="active",
                         labels=None if rw else {CREATED: "image"})

    def remove(self, layer_id: str) -> None:
        with self._using() as store:
            store.remove(layer_id)

    def get(self, layer_id: str) -> str:
        with self._using() as store:
            return store.get(layer_id)

    def put(self, layer_id: str) -> None:
        with self._using() as store:
            store.put(layer_id)

    def exists(self, layer_id: str) -> bool:
        with self._using() as store:
            try:
                return store.layer(layer_id).id == layer_id  # an id, not a layer's name
            except (LayerNotFound, InvalidArgument):
                return False

    def status(self) -> list[tuple[str, str]]:
        with self._using() as store:
            rows = list(store.status())
            rows += [
                ("Store", self.root),
                ("Driver", self.driver_name),
                ("Store layers", str(len(store.layers()))),
            ]
        if self.options:
            rows.append(("Driver options", " ".join(f"{k}={v}" for k, v in
                                                    sorted(self.options.items()))))
        if self._home:
            rows.append(("Docker home", self._home))
        return rows

    def metadata(self, layer_id: str) -> dict[str, str]:
        with self._using() as store:
            return store.metadata(layer_id)

    def cleanup(self) -> None:
        """dockerd is shutting down (it has put back every layer it got): release every
        mount and stop what serves them, as Docker's drivers did."""
        with self._using() as store, store.transaction():
            store.driver.cleanup()

    # ------------------------------------------------------------------ diffs

    def check_layer(self, layer_id: str, parent: str | None) -> None:
        """Fail now (before a stream starts) if the layer or the parent is unknown."""
        with self._using() as store:
            store.layer(layer_id)
            if parent is not None:
                store.layer(parent)

    def export(self, layer_id: str, parent: str | None, fd: int) -> None:
        """Write the layer's diff against parent (None: the whole layer) to fd."""
        with self._using() as store:
            store.export(layer_id, fd, parent)

    def changes(self, layer_id: str, parent: str | None) -> list[dict[str, Any]]:
        with self._using() as store:
            return [{"Path": c.path, "Kind": int(c.kind)}
                    for c in store.changes(layer_id, parent)]

    def check_apply(self, layer_id: str, parent: str | None) -> int:
        """Fail now (before the body is read) if the diff cannot be applied as asked; the
        layer's size before."""
        with self._using() as store:
            layer = store.layer(layer_id)
            if layer.id != layer_id:
                raise LayerNotFound(layer_id)
            if layer.parent != parent:
                raise InvalidArgument(
                    f"layer {layer_id!r} has parent {layer.parent or '(none)'}, "
                    f"not {parent or '(none)'}")
            return layer.size

    def apply(self, layer_id: str, fd: int) -> int:
        """Apply the layer tar read from fd; the layer's size after. An image layer (made by
        Create) is complete then: it is committed."""
        with self._using() as store:
            size = store.apply(layer_id, fd).size
            self._seal(store, layer_id)
            return size

    @staticmethod
    def _seal(store: Store, layer_id: str) -> None:
        """Commit an image layer made by Create that is still writable (see create())."""
        layer = store.layer(layer_id)
        if layer.kind == "active" and layer.labels.get(CREATED) == "image":
            store.commit(layer_id, labels={})

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        with self._using() as store:
            return store.diff_size(layer_id, parent)
