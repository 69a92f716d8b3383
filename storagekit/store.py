"""The layer store: layers with identity, names, labels and kinds on top of one driver.

(One class, and so one long file: every operation on the layers table keeps to one lock and
transaction discipline, and reads best beside the others. What can stand alone does, next to
it: layer.py — the records; schema.py — versioned tables; collector.py — what dead processes
leave; refs.py — who holds a layer mounted.)

Layout of a store root::

    store.db        SQLite: the layer graph, names, labels, content identity, the versions
                    of every component's tables, temporary paths outside the store
    store.lock      flock()ed while the metadata changes (short critical sections)
    locks/<id>      flock()ed by the process that is creating, applying or removing <id>
                    (run-<layer>: by the runtime of the container on that layer)
    <driver>/       the driver's home

A layer is visible (listed, mountable, usable as a parent) only in state ``ready``. Creating,
applying or removing a layer first records the state and takes the layer's lock file, does the
slow work without holding the store lock, then records the outcome. If the process dies in
between, its lock file is released by the kernel; the next ``Store`` opened on the root finds
the layer in a transitional state with an unlocked lock file and removes what was left, so a
crash never leaves a half-made layer behind.

Kinds follow containerd: ``committed`` (an image layer: read-only once made), ``active`` (a
read-write layer, a container's) and ``view`` (a read-only layer that cannot be a parent); an
active layer is committed in place (commit()). Content identity follows OCI: the diff ID is the
digest of the layer's uncompressed tar, the chain ID identifies the layer together with all its
parents. Options that shape the driver's data are recorded with the store when it is made.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from _thread import RLock, get_ident  # threading's own RLock; threading is not needed

from . import collector, registry, schema
from .driver import PERSISTENT, ApplyResult, Change, CreateOpts, Driver, Mount, check_id
from .errors import (
    DriverUnsupported,
    InvalidArchive,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StorageError,
    StoreError,
)
from .fsutil import LockBusy, existing_ancestor, lock, try_lock
from .layer import (  # chain_id and default_root: the store's API, defined with Layer
    KEEP,
    KINDS,
    PARENT,
    Layer,
    chain_id,
    chain_of,
    check_labels,
    default_root,
)
from .streams import ProducerStream

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path
    from typing import Any, BinaryIO

# The store's own tables; migrations are numbered from 1 (see storagekit/schema.py).
SCHEMA = schema.Schema("store", {"meta", "layers", "labels", "layer_refs", "layers_parent",
                                 "layers_chain", "scratch"}, [
    # 1: the layer graph, names, labels, content identity, references
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS layers (
        id       TEXT PRIMARY KEY,
        parent   TEXT REFERENCES layers(id),
        kind     TEXT NOT NULL CHECK (kind IN ('committed', 'active', 'view')),
        name     TEXT UNIQUE,
        diff_id  TEXT,
        chain_id TEXT,
        size     INTEGER NOT NULL DEFAULT 0,
        created  REAL NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'applying', 'removing')),
        owner    INTEGER
    );
    CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
    CREATE INDEX IF NOT EXISTS layers_chain ON layers(chain_id);
    CREATE TABLE IF NOT EXISTS labels (
        layer TEXT NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (layer, key)
    );
    CREATE TABLE IF NOT EXISTS layer_refs (
        layer TEXT NOT NULL REFERENCES layers(id),
        owner TEXT NOT NULL,
        PRIMARY KEY (layer, owner)
    )
    """,
    # 2: when a layer last changed (its labels, kind, content): containerd's Info.Updated
    schema.add_column("layers", "updated", "REAL"),
    # 3: temporary paths outside the store and the process making them (see scratch())
    """
    CREATE TABLE IF NOT EXISTS scratch (
        path  TEXT PRIMARY KEY,
        owner TEXT NOT NULL
    )
    """,
])

# meta key: committed and view layers of this store are read-only in its driver (see
# Store._mark_readonly_layers)
_READONLY_MARKED = "readonly_layers_marked"
# meta key: the driver's shaping options as the store was made with them (JSON)
_DRIVER_OPTIONS = "driver_options"

#: The store option (-o max-layer-size=SIZE, 0 for none) that bounds the file data one
#: applied layer tar may declare, holes included: a 3.5 KB sparse tar can declare a 1 TiB
#: file, which every copy, export and scan of the layer would then read.
MAX_LAYER_SIZE = "max-layer-size"
DEFAULT_MAX_LAYER_SIZE = 256 << 30


def staging_key(layer_id: str) -> str:
    """The meta key that marks an apply onto layer_id as still staging (Store._staging)."""
    return f"staging {layer_id}"


def staging_layer(layer_id: str) -> str:
    """The driver layer an apply onto layer_id stages the tar in (Store._apply_staged)."""
    return f"{layer_id[:190]}.apply"


class _Busy(Exception):
    """Inside the store lock: the layer is being changed by another process; the caller
    waits for it outside the lock (Store._wait_for) and tries again."""

    def __init__(self, layer_id: str) -> None:
        super().__init__(layer_id)
        self.layer_id = layer_id


class Outcome:
    """What the work inside Store._transition decided: the columns to record on the layer
    once it is ready, or that its row goes (delete)."""

    __slots__ = ("columns", "delete", "keep", "kept")

    def __init__(self) -> None:
        self.columns: dict[str, Any] = {}
        self.delete = False
        self.keep = False  # a failure leaves the layer as it was, ready, not discarded
        self.kept = "was left as it was"  # what the error says then


__all__ = ["KEEP", "KINDS", "PARENT", "SCHEMA", "Layer", "Store", "chain_id", "default_root"]


class Store:
    """Layers on one driver under one root directory. Safe to use from several processes
    (and threads) at once."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        driver: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Open (creating if needed) the store under `root` (default: $STORAGEKIT_ROOT or
        /var/lib/storagekit) on `driver` (default: the one the store was made with, else the
        best this host supports), with driver `options` (KEY: VALUE). Finishes what dead
        processes left (see collect()). Raises DriverNotFound, DriverUnsupported,
        InvalidArgument (an option, or one that differs from what the store was made with),
        StoreError (an unreadable or newer store database)."""
        #: The root directory, absolute, as a str (`root` is the same as a Path).
        self.root_dir = os.path.abspath(root if root is not None else default_root())
        if not os.path.isdir(self.root_dir):
            self._check_new_root(driver)
        os.makedirs(self.root_dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root_dir + "/locks", 0o700)
        self._mutex = RLock()
        self._tx_thread: int | None = None  # the thread inside transaction(), if any
        self._db = sqlite3.connect(
            self.root_dir + "/store.db", timeout=60, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            # What is there, read once: opening a store that is up to date writes nothing.
            self._versions = schema.read_versions(self._db)
            self._names = schema.existing_names(self._db)
            self.ensure_schema(SCHEMA)
            self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self.driver_name, cls = self._choose_driver(driver)
        except sqlite3.DatabaseError as e:
            self._db.close()
            db = self.root_dir + "/store.db"
            raise StoreError(f"cannot open the store database {db}: {e}") from None
        ok, reason = cls.probe(self.root_dir)
        if not ok:
            raise DriverUnsupported(self.driver_name, reason)
        options = dict(options or {})
        limit = options.pop(MAX_LAYER_SIZE, None)
        self.driver: Driver = cls(f"{self.root_dir}/{self.driver_name}",
                                  self._driver_options(cls, options))
        self.driver.max_layer_size = DEFAULT_MAX_LAYER_SIZE
        if limit is not None:
            from .options import parse_size

            self.driver.max_layer_size = parse_size(limit, MAX_LAYER_SIZE)
        if cls.shaping_options and _DRIVER_OPTIONS not in self._meta:
            with self._locked():
                self._set_meta(_DRIVER_OPTIONS, json.dumps(self.driver.on_disk_options()))
        if self._meta.get(_READONLY_MARKED) != "1":
            self._mark_readonly_layers()
        self.collect()

    @property
    def root(self) -> Path:
        """The root directory as a Path (imported on first use: see Driver.home)."""
        from pathlib import Path

        return Path(self.root_dir)

    def close(self) -> None:
        """Close the store's database connection. Mounts and layers stay as they are."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ locking

    @property
    def db(self) -> sqlite3.Connection:
        """The metadata database, for modules that keep their own tables in it (images,
        containers); change it only inside transaction()."""
        return self._db

    def ensure_schema(self, component: schema.Schema) -> None:
        """Bring a component's tables up to date (its numbered migrations; see
        storagekit/schema.py). Nothing is written, and no lock taken, when they are; a schema
        newer than this storagekit knows is refused (StoreError)."""
        if schema.is_current(component, self._versions, self._names):
            return
        schema.check_not_newer(component, self._versions.get(component.component, 0),
                               self.root_dir)
        with self._locked():
            schema.migrate(self._db, component, self.root_dir)
        self._versions[component.component] = component.version
        self._names |= component.names

    def has_schema(self, component: str) -> bool:
        """Has a component (images, containers, ...) ever made its tables in this store?"""
        return component in self._versions

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive across processes and threads; one SQL transaction (reentrant)."""
        return self._locked()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (flock) and threads (mutex); one SQL transaction."""
        if self._tx_thread == get_ident():  # already inside: join the open transaction
            yield
            return
        with self._mutex:
            fd = lock(self.root_dir + "/store.lock")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._tx_thread = get_ident()
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                finally:
                    self._tx_thread = None
                self._db.execute("COMMIT")
            finally:
                os.close(fd)

    def _take_layer_lock(self, layer_id: str) -> int | None:
        """Take locks/<id> without waiting; None if a live process holds it."""
        return try_lock(f"{self.root_dir}/locks/{layer_id}")

    def _drop_layer_lock(self, layer_id: str, fd: int) -> None:
        # Unlink while holding the lock, so nobody locks a file that is about to vanish.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.root_dir}/locks/{layer_id}")
        os.close(fd)

    @contextlib.contextmanager
    def _transition(self, layer_id: str, state: str, begin: Callable[[], None], *,
                    on_failure: str, failed: str) -> Iterator[Outcome]:
        """Every change of a layer's state, the one way it is made safe against crashes:

        1. under the store lock: ``begin()`` checks that the change may be made (and records
           a new layer's row), the layer's lock file is taken, the row's state becomes
           `state` with this process as its owner;
        2. the work (the block), outside the store lock, holding the layer lock;
        3. under the store lock again: the outcome the block set on the Outcome it got is
           recorded — the row is ready with the columns it set, or deleted;
        4. on failure the layer is discarded (``on_failure="discard"``: nothing of a layer
           half made or half applied remains) or left for recovery (``"recover"``), and an
           archive error says what became of the layer (`failed`).

        If ``begin()`` finds a layer it needs (the layer itself, its parent) being changed by
        another process (it raises _Busy), the transition waits for that process outside the
        store lock and begins again: a second creator of a layer waits for the first.

        If the process dies during 2, the kernel drops its layer lock; the next Store opened
        on the root finds the row in `state` with an unlocked lock file and discards it
        (recover()). As containerd's metadata store runs every change in WithTransaction."""
        while True:
            try:
                with self._locked():
                    begin()
                    fd = self._take_layer_lock(layer_id)
                    if fd is None:
                        raise LayerInUse(layer_id, "another process is working on it")
                    self._db.execute("UPDATE layers SET state = ?, owner = ? WHERE id = ?",
                                     (state, os.getpid(), layer_id))
                break
            except _Busy as busy:
                collector.wait_for(self, busy.layer_id)
        outcome = Outcome()
        try:
            yield outcome
            with self._locked():
                if outcome.delete:
                    self._db.execute("DELETE FROM layers WHERE id = ?", (layer_id,))
                else:
                    columns = {"state": "ready", "owner": None, **outcome.columns}
                    self._db.execute(
                        f"UPDATE layers SET {', '.join(f'{c} = ?' for c in columns)} "
                        "WHERE id = ?", (*columns.values(), layer_id))
        except BaseException as e:
            try:
                with self._locked():
                    if outcome.keep:
                        self._db.execute("UPDATE layers SET state = 'ready', owner = NULL "
                                         "WHERE id = ?", (layer_id,))
                    elif on_failure == "discard":
                        self._discard(layer_id)
            finally:
                self._drop_layer_lock(layer_id, fd)
            if isinstance(e, InvalidArchive):
                what = outcome.kept if outcome.keep else failed
                raise InvalidArchive(f"{e.detail}; layer {layer_id!r} {what}",
                                     e.source) from None
            raise
        self._drop_layer_lock(layer_id, fd)

    # ------------------------------------------------------------------ opening

    def _driver_options(self, cls: type[Driver], given: Mapping[str, str]) -> dict[str, str]:
        """The driver's options: those given, over the values of the shaping options this
        store recorded when it was made (a given value that differs is refused)."""
        recorded = json.loads(self._meta.get(_DRIVER_OPTIONS) or "{}")
        for key, value in given.items():
            if key in cls.shaping_options and key in recorded:
                try:
                    same = cls.canonical_option(key, value) == recorded[key]
                except StorageError:
                    same = True  # a malformed value: the driver says what is wrong with it
                if not same:
                    raise StoreError(
                        f"the store at {self.root_dir} was made with {key}={recorded[key]}, "
                        f"which cannot change; leave out -o {key}={value} or use another "
                        "--root")
        return {**{k: v for k, v in recorded.items() if k in cls.shaping_options}, **given}

    def _set_meta(self, key: str, value: str) -> None:
        """Record key = value in the meta table (inside a transaction)."""
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
        self._meta[key] = value

    def _mark_readonly_layers(self) -> None:
        """Once per store: committed and view layers made before drivers kept a read-only
        record of their own get one, so that they mount read-only like every layer since."""
        with self._locked():
            for row in self._db.execute("SELECT id FROM layers WHERE state = 'ready' AND "
                                        "kind IN ('committed', 'view')").fetchall():
                if self.driver.exists(row["id"]) and not self.driver.is_readonly(row["id"]):
                    self.driver._set_readonly(row["id"])
            self._set_meta(_READONLY_MARKED, "1")

    def _check_new_root(self, wanted: str | None) -> None:
        """Before a new store's root is made: refuse a driver that does not exist or cannot
        run there, so that the refusal leaves nothing behind (no root, no store.db). Undoing
        a half-made root afterwards could race with another process making the same store."""
        if wanted is None:
            return  # the best driver the host supports is chosen: none is a failure later
        cls = registry.driver_class(wanted)
        ok, reason = cls.probe(existing_ancestor(self.root_dir))
        if not ok:
            raise DriverUnsupported(wanted, reason)

    def _choose_driver(self, wanted: str | None) -> tuple[str, type[Driver]]:
        meta = self._meta
        recorded, hint = meta.get("driver"), meta.get("driver_class")
        if recorded and hint and wanted in (None, recorded):  # as recorded: nothing to write
            cls = registry.driver_class(recorded, hint)
            if registry.class_path(cls) == hint:
                return recorded, cls
        with self._locked():
            return self._record_driver(wanted)

    def _record_driver(self, wanted: str | None) -> tuple[str, type[Driver]]:
        self._meta = meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        recorded = meta.get("driver")
        if wanted is None:
            wanted = recorded or registry.best(self.root_dir)
        if recorded and recorded != wanted:
            if self._db.execute("SELECT 1 FROM layers LIMIT 1").fetchone():
                raise StoreError(
                    f"the store at {self.root_dir} holds layers of driver {recorded!r}; "
                    f"use --driver {recorded} or another --root"
                )
        hint = meta.get("driver_class") if recorded == wanted else None
        cls = registry.driver_class(wanted, hint)  # fails early on an unknown name
        for key, value in (("driver", wanted), ("driver_class", registry.class_path(cls))):
            if meta.get(key) != value:
                self._set_meta(key, value)
        return wanted, cls

    def recover(self) -> list[str]:
        """Remove layers left half-made by processes that died; returns their ids."""
        return collector.recover(self)

    def _discard(self, layer_id: str) -> None:
        """Drop a layer's driver data and row (store lock held by the caller)."""
        self.driver.release(layer_id)
        self.driver.remove(layer_id)
        self._db.execute("DELETE FROM layer_refs WHERE layer = ?", (layer_id,))
        self._db.execute("DELETE FROM layers WHERE id = ?", (layer_id,))

    # ------------------------------------------------------------------ reading

    def _row(self, layer_id: str, *, visible_only: bool = True,
             busy: bool = False) -> sqlite3.Row:
        """The layer's row; LayerNotFound unless it is ready (visible). `busy`: a layer in a
        transitional state raises _Busy instead, for callers that wait for it."""
        row = self._db.execute("SELECT * FROM layers WHERE id = ?", (layer_id,)).fetchone()
        if busy and row is not None and row["state"] != "ready":
            raise _Busy(layer_id)
        if row is None or (visible_only and row["state"] != "ready"):
            detail = ""
            if row is not None:
                doing = {"creating": "created", "applying": "applied", "removing": "removed"}
                detail = f" (it is being {doing[row['state']]} by process {row['owner']})"
            raise LayerNotFound(layer_id, detail)
        return row

    def _labels(self, layer_id: str) -> dict[str, str]:
        return {
            r["key"]: r["value"]
            for r in self._db.execute("SELECT key, value FROM labels WHERE layer = ?", (layer_id,))
        }

    def _layer(self, row: sqlite3.Row) -> Layer:
        return Layer(
            id=row["id"], parent=row["parent"], kind=row["kind"], name=row["name"],
            diff_id=row["diff_id"], chain_id=row["chain_id"], size=row["size"],
            created=row["created"], labels=self._labels(row["id"]), updated=row["updated"],
        )

    def layer(self, layer_id: str) -> Layer:
        """The layer with this id or name."""
        with self._mutex:
            row = self._db.execute(
                "SELECT * FROM layers WHERE (id = ? OR name = ?) AND state = 'ready' "
                "ORDER BY id = ? DESC LIMIT 1",
                (layer_id, layer_id, layer_id),
            ).fetchone()
            if row is None:
                self._row(layer_id)  # raises with the reason
            return self._layer(row)

    def resolve(self, ref: str) -> str:
        """The id of the layer whose id or name is ref."""
        return self.layer(ref).id

    def exists(self, layer_id: str) -> bool:
        """Whether a layer with this id is in the store (complete, not being made or
        removed). Raises InvalidArgument for an id that cannot be a layer id."""
        try:
            self.layer(layer_id)
        except LayerNotFound:
            return False
        return True

    def layers(self, kind: str | None = None) -> list[Layer]:
        """Every visible layer, parents before children, oldest first."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT * FROM layers WHERE state = 'ready' AND (? IS NULL OR kind = ?) "
                "ORDER BY created, id",
                (kind, kind),
            ).fetchall()
            return [self._layer(r) for r in rows]

    def children(self, layer_id: str) -> list[str]:
        """The ids of the layers whose parent is `layer_id` (none: an empty list)."""
        with self._mutex:
            return [
                r["id"]
                for r in self._db.execute(
                    "SELECT id FROM layers WHERE parent = ? ORDER BY id", (layer_id,)
                )
            ]

    def by_chain_id(self, chain: str) -> Layer | None:
        """The complete layer with this OCI chain ID, or None."""
        with self._mutex:
            row = self._db.execute(
                "SELECT * FROM layers WHERE chain_id = ? AND state = 'ready' "
                "ORDER BY created LIMIT 1", (chain,)
            ).fetchone()
            return self._layer(row) if row else None

    # ------------------------------------------------------------------ creating

    def create(
        self,
        layer_id: str,
        parent: str | None = None,
        *,
        kind: str = "committed",
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        diff: BinaryIO | int | None = None,
        expect_diff_id: str | None = None,
        volatile: bool = False,
        ref: str | None = None,
    ) -> Layer:
        """Create a layer on `parent`; with `diff`, apply that layer tar to it as well (and,
        with `expect_diff_id`, check that the tar is the one expected). `volatile`: its
        content need not survive a crash of the host (see CreateOpts). `ref`: an owner that
        holds a reference on the layer from its birth (see add_ref); an owner that names a
        process (storagekit.owners) makes the layer garbage once that process dies, unless
        something else referenced it meanwhile (see collect()).

        The layer becomes visible only when everything succeeded; on failure (or if the
        process dies) nothing of it remains. Raises LayerExists, LayerNotFound (parent),
        InvalidArgument, InvalidArchive."""
        check_id(layer_id)
        if kind not in KINDS:
            raise InvalidArgument(f"unknown layer kind {kind!r} (one of {', '.join(KINDS)})")
        labels = check_labels(labels)
        parent_chain: list[str | None] = [None]

        def begin() -> None:
            row = self._db.execute("SELECT state FROM layers WHERE id = ?",
                                   (layer_id,)).fetchone()
            if row is not None:
                raise LayerExists(layer_id) if row["state"] == "ready" else _Busy(layer_id)
            if name is not None:
                self._check_name_free(name)
            if parent is not None:
                prow = self._row(parent, busy=True)
                if prow["kind"] == "view":
                    raise InvalidArgument(f"layer {parent!r} is a view and cannot be a parent")
                parent_chain[0] = prow["chain_id"]
            now = time.time()
            self._db.execute(
                "INSERT INTO layers(id, parent, kind, name, created, updated, state, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, 'creating', ?)",
                (layer_id, parent, kind, name, now, now, os.getpid()),
            )
            self._db.executemany(
                "INSERT INTO labels(layer, key, value) VALUES (?, ?, ?)",
                [(layer_id, k, v) for k, v in labels.items()],
            )
            if ref is not None:
                self._db.execute("INSERT INTO layer_refs(layer, owner) VALUES (?, ?)",
                                 (layer_id, ref))

        with self._transition(layer_id, "creating", begin, on_failure="discard",
                              failed="was not created") as outcome:
            opts = CreateOpts(volatile=True) if volatile else None
            if kind == "active":
                self.driver.create_rw(layer_id, parent, opts)
            else:
                self.driver.create(layer_id, parent, opts)
            if diff is not None:
                result = self.driver.apply_diff(layer_id, parent, diff)
                if expect_diff_id is not None and result.diff_id != expect_diff_id:
                    raise InvalidArchive(
                        f"its digest is {result.diff_id}, not the expected {expect_diff_id}")
                outcome.columns = {
                    "size": result.size, "diff_id": result.diff_id,
                    "chain_id": chain_of(parent, parent_chain[0], result.diff_id)}
        return self.layer(layer_id)

    def _check_name_free(self, name: str) -> None:
        if not isinstance(name, str) or not name or len(name) > 4096:
            raise InvalidArgument("a layer name must be a non-empty string")
        row = self._db.execute("SELECT id FROM layers WHERE name = ?", (name,)).fetchone()
        if row:
            raise LayerExists(f"{row['id']} (named {name!r})")

    def apply(self, layer_id: str, diff: BinaryIO | int) -> Layer:
        """Apply a layer tar (plain, gzip or zstd) to an existing layer that has no children
        and is not mounted. While it runs the layer is invisible. Input that does not start
        like an archive is refused first. A layer that was empty goes if the apply fails (its
        content would be half-applied; Docker's ApplyDiff removes it too); a layer with
        content keeps it: the tar is applied to a scratch child first (see _apply_staged)."""
        from .sniff import checked_archive

        check_id(layer_id)
        row: list[sqlite3.Row] = []
        parent_chain: list[str | None] = [None]

        def begin() -> None:
            row.append(self._row(layer_id))
            self._check_unused(layer_id, "apply a diff to it")
            if row[0]["parent"] is not None:
                parent_chain[0] = self._row(row[0]["parent"])["chain_id"]

        with self._transition(layer_id, "applying", begin, on_failure="discard",
                              failed="was removed (its content was incomplete)") as outcome:
            before = row[-1]
            fresh = before["size"] == 0 and before["diff_id"] is None
            outcome.keep = not fresh
            if not fresh:  # a process killed before the layer itself changes leaves it intact
                self._staging(layer_id, True)
            stream = checked_archive(diff)
            if fresh:
                result: ApplyResult = self.driver.apply_diff(layer_id, before["parent"], stream)
                diff_id: str | None = result.diff_id
                chain = chain_of(before["parent"], parent_chain[0], result.diff_id)
            else:  # several tars: no single diff ID describes the content
                result = self._apply_staged(layer_id, before["parent"], stream, outcome)
                chain = diff_id = None
            outcome.columns = {"size": before["size"] + result.size, "diff_id": diff_id,
                               "chain_id": chain, "updated": time.time()}
        return self.layer(layer_id)

    def _apply_staged(self, layer_id: str, parent: str | None, stream: BinaryIO | int,
                      outcome: Outcome) -> ApplyResult:
        """Apply a tar to a layer that has content without risking it: into a scratch child
        of the layer first (a tar that fails half-way leaves only the child to drop), then
        the child's diff, which is well-formed, onto the layer. The scratch child is a driver
        layer with no row: recovery of a layer left "staging" removes it (collector)."""
        scratch = staging_layer(layer_id)
        self.driver.create(scratch, layer_id)
        try:
            self.driver.apply_diff(scratch, layer_id, stream)
            self._staging(layer_id, False)  # from here on the layer itself changes
            outcome.kept = "kept its content, with part of the new one (a write failed)"
            return self.driver.apply_diff(layer_id, parent, self.driver.diff(scratch, layer_id))
        finally:
            self.driver.release(scratch)
            self.driver.remove(scratch)
            self._staging(layer_id, False)

    def _staging(self, layer_id: str, on: bool) -> None:
        """Mark (or unmark) an apply onto layer_id as not having touched the layer yet: a
        process killed while it is marked leaves the layer to be kept, not discarded."""
        with self._locked():
            if on:
                self._set_meta(staging_key(layer_id), str(os.getpid()))
            else:
                self._db.execute("DELETE FROM meta WHERE key = ?", (staging_key(layer_id),))
                self._meta.pop(staging_key(layer_id), None)

    # ------------------------------------------------------------------ removing

    def add_ref(self, layer_id: str, owner: str) -> None:
        """Record that `owner` (e.g. "image busybox") uses the layer: it cannot be removed
        until the reference is dropped. Call inside transaction()."""
        self._row(layer_id)
        self._db.execute("INSERT OR IGNORE INTO layer_refs(layer, owner) VALUES (?, ?)",
                         (layer_id, owner))

    def drop_ref(self, layer_id: str, owner: str) -> None:
        """Drop the reference `owner` holds on the layer (see add_ref); nothing if it holds
        none."""
        self._db.execute("DELETE FROM layer_refs WHERE layer = ? AND owner = ?",
                         (layer_id, owner))

    def refs(self, layer_id: str) -> list[str]:
        """The owners holding a reference on the layer, sorted."""
        with self._mutex:
            return [r["owner"] for r in self._db.execute(
                "SELECT owner FROM layer_refs WHERE layer = ? ORDER BY owner", (layer_id,))]

    def _check_unused(self, layer_id: str, what: str) -> None:
        owners = self.refs(layer_id)
        if owners:
            raise LayerInUse(layer_id, f"cannot {what}: it is used by {', '.join(owners)}")
        kids = self.children(layer_id)
        for kid in [k for k in kids if self._row(k, visible_only=False)["state"] != "ready"]:
            # a child left half made (its discard failed, or its process died) goes first
            if collector.recover_one(self, kid):
                kids.remove(kid)
        if kids:
            shown = ", ".join(kids[:3]) + (", ..." if len(kids) > 3 else "")
            raise LayerInUse(layer_id, f"cannot {what}: it has children ({shown})")
        refs = self.driver.refcount(layer_id)
        if refs:
            raise LayerInUse(
                layer_id, f"cannot {what}: it is mounted ({refs} reference{'s' * (refs > 1)}); "
                "unmount it first"
            )

    def remove(self, layer_id: str) -> None:
        """Remove a layer that has no children, no references and is not mounted. Raises
        LayerNotFound, LayerInUse."""
        check_id(layer_id)

        def begin() -> None:
            self._row(layer_id)
            self._check_unused(layer_id, "remove it")

        with self._transition(layer_id, "removing", begin, on_failure="recover",
                              failed="is being removed") as outcome:
            self.driver.remove(layer_id)
            outcome.delete = True

    # ------------------------------------------------------------------ collecting

    def collect(self) -> list[str]:
        """Collect what dead processes left (run at every open; see storagekit/collector.py).
        Returns what went: layer ids and paths."""
        return collector.collect(self)

    def scratch(self, path: str) -> contextlib.AbstractContextManager[str]:
        """`with store.scratch(path):` — a temporary path outside the store, removed at the
        end of the block or, if this process dies, by the next open (collector.scratch)."""
        return collector.scratch(self, path)

    def prune(self) -> list[str]:
        """collect(), and the thorough part: the driver's leftovers of dead processes and
        stale lock files (collector.prune). Returns what went."""
        return collector.prune(self)

    # ------------------------------------------------------------------ labels

    def set_labels(self, layer_id: str, labels: Mapping[str, str], replace: bool = False) -> Layer:
        """Set labels on the layer (replace=True: these become all its labels). Raises
        LayerNotFound, InvalidArgument (a label over 4096 bytes with its value)."""
        labels = check_labels(labels)
        with self._locked():
            self._row(layer_id)
            self._write_labels(layer_id, labels, replace)
        return self.layer(layer_id)

    def _write_labels(self, layer_id: str, labels: dict[str, str], replace: bool) -> None:
        if replace:
            self._db.execute("DELETE FROM labels WHERE layer = ?", (layer_id,))
        self._db.executemany(
            "INSERT INTO labels(layer, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(layer, key) DO UPDATE SET value = excluded.value",
            [(layer_id, k, v) for k, v in labels.items()],
        )
        self._db.execute("UPDATE layers SET updated = ? WHERE id = ?", (time.time(), layer_id))

    # ------------------------------------------------------------------ committing

    def commit(self, layer_id: str, *, name: object = KEEP,
               labels: Mapping[str, str] | None = None) -> Layer:
        """Make an active layer committed, in O(1) on every driver: its content stays where
        it is (no copy, no diff), and from now on it mounts read-only and can be a parent.
        `name`: the committed layer's name (default: it keeps its own; None: no name);
        `labels`: if given, they replace the layer's labels. It has no diff ID (its content
        did not come from one tar). Raises LayerNotFound, InvalidArgument (not active),
        LayerExists (the name is taken), LayerInUse (mounted)."""
        check_id(layer_id)
        new_labels = None if labels is None else check_labels(labels)
        with self._locked():
            row = self._row(layer_id)
            if row["kind"] != "active":
                raise InvalidArgument(f"layer {layer_id!r} is {row['kind']}, not active: only "
                                      "an active layer can be committed")
            if name is not KEEP and name != row["name"]:
                if name is not None:
                    self._check_name_free(name)  # type: ignore[arg-type]
                self._db.execute("UPDATE layers SET name = ? WHERE id = ?", (name, layer_id))
            if new_labels is not None:
                self._write_labels(layer_id, new_labels, replace=True)
            self._db.execute(
                "UPDATE layers SET kind = 'committed', diff_id = NULL, chain_id = NULL, "
                "updated = ? WHERE id = ?", (time.time(), layer_id))
            # Last, so that a refusal (mounted) rolls the record back with it. If the process
            # dies after this and before the commit of the transaction, the driver holds the
            # layer read-only while the store still says active: safe, and a new commit of
            # the layer finishes it.
            self.driver.commit(layer_id)
        return self.layer(layer_id)

    # ------------------------------------------------------------------ mounting

    def get(self, layer_id: str, *, holder: str = PERSISTENT) -> str:
        """Mount the layer (ref-counted across processes) and return its path. `holder`:
        see Driver.get (a process's references end with it)."""
        with self._locked():
            self._row(check_id(layer_id))
            return self.driver.get(layer_id, holder=holder)

    def put(self, layer_id: str, *, holder: str = PERSISTENT) -> None:
        """Release one get of `holder`; the last put unmounts."""
        with self._locked():
            self._row(check_id(layer_id))
            self.driver.put(layer_id, holder=holder)

    def mounts(self, layer_id: str) -> list[Mount]:
        """How to mount the layer, as data (a containerd snapshotter's Mounts: type, source,
        options) instead of mounting it. Committed and view layers come read-only. Raises
        LayerNotFound."""
        with self._mutex:
            self._row(check_id(layer_id))
            return self.driver.mounts(layer_id)

    def metadata(self, layer_id: str) -> dict[str, str]:
        """The driver's facts about the layer (its directories, device, ...), as Docker's
        GetMetadata. Raises LayerNotFound."""
        with self._mutex:
            self._row(check_id(layer_id))
            return self.driver.metadata(layer_id)

    # ------------------------------------------------------------------ diffs

    def _parent_for(self, layer_id: str, parent: object) -> str | None:
        row = self._row(check_id(layer_id))
        if parent is PARENT:
            return row["parent"]
        if parent is not None:
            self._row(check_id(parent))  # type: ignore[arg-type]
        return parent  # type: ignore[return-value]

    @contextlib.contextmanager
    def _held(self, *layer_ids: str | None) -> Iterator[None]:
        """Keep layers from being removed or applied to while a diff reads them: a shared
        flock on their lock files (removing and applying take it exclusively). Nothing is
        mounted here: drivers mount what they need themselves, and native diffs need nothing."""
        fds = []
        try:
            for lid in layer_ids:
                if lid is None:
                    continue
                try:
                    fds.append(lock(f"{self.root_dir}/locks/{lid}", shared=True, wait=False))
                except LockBusy:
                    raise LayerInUse(lid, "another process is changing it") from None
                self._row(lid)  # still there and ready once held
            yield
        finally:
            for fd in fds:
                os.close(fd)

    def export(
        self, layer_id: str, fd: int, parent: object = PARENT, compression: str = "none"
    ) -> dict[str, Any]:
        """Write the layer's diff against parent (default: its own parent) to fd."""
        parent_id = self._parent_for(layer_id, parent)
        with self._held(layer_id, parent_id):
            return self.driver.export_diff(layer_id, parent_id, fd, compression)

    def diff(self, layer_id: str, parent: object = PARENT) -> BinaryIO:
        """The layer's change against `parent` (default: its own parent) as an uncompressed OCI
        layer tar, streamed: read it to the end or close it. Raises LayerNotFound."""
        parent_id = self._parent_for(layer_id, parent)
        return ProducerStream(  # type: ignore[return-value]
            lambda fd: self.export(layer_id, fd, parent_id)
        )

    def changes(self, layer_id: str, parent: object = PARENT) -> list[Change]:
        """What the layer changes against `parent` (default: its own parent): a list of
        Change(path, kind), kind C/A/D as Docker's `diff`. Raises LayerNotFound."""
        parent_id = self._parent_for(layer_id, parent)
        with self._held(layer_id, parent_id):
            return self.driver.changes(layer_id, parent_id)

    def diff_size(self, layer_id: str, parent: object = PARENT) -> int:
        """The size in bytes of the files the layer changes against `parent` (default: its
        own parent), as Docker's DiffSize. Raises LayerNotFound."""
        parent_id = self._parent_for(layer_id, parent)
        with self._held(layer_id, parent_id):
            return self.driver.diff_size(layer_id, parent_id)

    def status(self) -> list[tuple[str, str]]:
        """The driver's status lines (key, value), as `storagekit info` prints them."""
        return self.driver.status()
