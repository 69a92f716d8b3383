"""The driver contract: Docker's graphdriver contract in Python terms.

A driver stores layers under its home directory. Each layer has an id and an optional parent;
``get`` makes a layer's full filesystem (its parents' content plus its own) available at a path,
``put`` releases it. Diffs move layers in and out as OCI layer tars.

Every driver subclasses :class:`Driver` and implements the abstract methods. The base class
provides what is the same for all drivers:

* reference counting of ``get``/``put`` that holds across processes (a layer is mounted on the
  first ``get`` anywhere and unmounted on the last ``put``; storagekit/refs.py keeps them);
* the *naive diff*: diff, changes, apply and size computed by mounting the layer (and its
  parent) and comparing trees, which serves drivers that have no native diff and every request
  whose ``parent`` is not the layer's direct parent;
* read-only layers: a layer made with ``create`` (an image layer, a view) is read-only from
  the start, one made with ``create_rw`` (a container's) is writable until ``commit`` makes it
  read-only. ``get`` mounts a read-only layer read-only, for real: a write through the mount
  fails with EROFS, on every driver; its mounts as data say "ro". Only ``apply_diff`` writes
  into a read-only layer (while nobody has it mounted). Drivers that keep no record of their
  own for this use the base's marker files, ``<home>/.readonly/<id>``.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod

from . import _native
from .errors import (
    InvalidArchive,
    InvalidArgument,
    LayerInUse,
    LayerNotFound,
    LayerNotMounted,
    StorageError,
)
from .owners import this_process
from .records import (  # the contract's records, defined beside it and used through it
    ApplyResult,
    Change,
    ChangeKind,
    CreateOpts,
    Mount,
    check_id,
)
from .refs import PERSISTENT, References
from .streams import ProducerStream, readable_fd

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path
    from typing import Any, BinaryIO, ClassVar

__all__ = ["PERSISTENT", "ApplyResult", "Change", "ChangeKind", "CreateOpts", "Driver", "Mount",
           "check_id"]


class Driver(ABC):
    """Base of every storage driver; see the module docstring."""

    #: Name used in configuration, the CLI and the entry-point group.
    name: ClassVar[str]
    #: Higher is preferred when no driver is named (only among supported drivers).
    priority: ClassVar[int] = 0
    #: Driver options this driver accepts, with a one-line description each.
    option_help: ClassVar[Mapping[str, str]] = {}
    #: The options that shape the data on disk (a filesystem type, a block size): the store
    #: records their values when it is made, later opens use the recorded ones, and a
    #: different value is an error (see Store).
    shaping_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, home: str | os.PathLike[str], options: Mapping[str, str] | None = None):
        """A driver keeping its layers under `home`, with its `options` (driver-specific
        KEY: VALUE, checked by the driver; a bad one raises InvalidArgument)."""
        #: The home directory, absolute, as a str (`home` is the same as a Path).
        self.home_dir = os.path.abspath(home)
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.option_help))
        if unknown:
            known = ", ".join(sorted(self.option_help)) or "none"
            raise InvalidArgument(
                f"unknown option {unknown[0]!r} for driver {self.name!r} (known: {known})"
            )
        os.makedirs(self.home_dir, mode=0o700, exist_ok=True)
        self._refs = References(self.home_dir + "/.refs")
        self._readonly_dir = self.home_dir + "/.readonly"
        with contextlib.suppress(FileExistsError):
            os.mkdir(self._readonly_dir, 0o700)
        #: Layers being written by apply_diff in this process: mounted writable even if
        #: read-only (nobody else can have them mounted meanwhile; the store sees to that).
        self._writers: set[str] = set()

    @property
    def home(self) -> Path:
        """The home directory as a Path. pathlib is imported on first use only: the paths
        of a container's boot are str (home_dir), and importing pathlib (with urllib.parse
        and ipaddress) costs a tenth of a CLI boot."""
        try:
            return self._home_path
        except AttributeError:
            from pathlib import Path

            self._home_path: Path = Path(self.home_dir)
            return self._home_path

    @classmethod
    def canonical_option(cls, key: str, value: str) -> str:
        """One spelling for an option value ("10G" and "10240M" are the same size), so that
        a recorded value and a given one can be compared."""
        return value

    def on_disk_options(self) -> dict[str, str]:
        """The values of the shaping options as this home's data has them, canonical."""
        return {}

    # ------------------------------------------------------------------ host support

    @classmethod
    @abstractmethod
    def probe(cls, root: str | os.PathLike[str]) -> tuple[bool, str]:
        """Can this driver run with its home under `root` on this host? (ok, reason)."""

    # ------------------------------------------------------------------ layer lifecycle

    @abstractmethod
    def create(
        self, layer_id: str, parent: str | None = None, opts: CreateOpts | None = None
    ) -> None:
        """Create an empty read-only (image) layer on `parent` (None: a base layer)."""

    def create_rw(
        self, layer_id: str, parent: str | None = None, opts: CreateOpts | None = None
    ) -> None:
        """Create a read-write layer (a container's) on `parent`."""
        self.create(layer_id, parent, opts)

    @abstractmethod
    def remove(self, layer_id: str) -> None:
        """Remove the layer, which must not be mounted. Also removes whatever a create that
        was interrupted left of it; an id that does not exist is not an error."""

    @abstractmethod
    def exists(self, layer_id: str) -> bool:
        """Whether the driver has a layer with this id."""

    @abstractmethod
    def parent(self, layer_id: str) -> str | None:
        """The parent the layer was created on."""

    @abstractmethod
    def status(self) -> list[tuple[str, str]]:
        """Key/value diagnostics, as ``docker info`` shows them."""

    @abstractmethod
    def metadata(self, layer_id: str) -> dict[str, str]:
        """Driver-specific facts about the layer, as ``docker inspect`` GraphDriver.Data."""

    @abstractmethod
    def mounts(self, layer_id: str) -> list[Mount]:
        """The mounts that make up the layer's filesystem, as data (nothing is mounted)."""

    # ------------------------------------------------------------------ read-only layers

    def is_readonly(self, layer_id: str) -> bool:
        """Is the layer read-only (made by create, or committed)? A driver with a record of
        its own for this overrides this, _set_readonly and _forget_readonly."""
        return os.path.exists(f"{self._readonly_dir}/{layer_id}")

    def _set_readonly(self, layer_id: str) -> None:
        with open(f"{self._readonly_dir}/{check_id(layer_id)}", "w"):
            pass

    def _forget_readonly(self, layer_id: str) -> None:
        """Drop the read-only record of a removed layer (one whose create never finished
        too: create records it before it makes the layer)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._readonly_dir}/{check_id(layer_id)}")

    def _mount_readonly(self, layer_id: str) -> bool:
        """Should _mount make this layer's mount read-only now?"""
        return layer_id not in self._writers and self.is_readonly(layer_id)

    def commit(self, layer_id: str) -> None:
        """Make a writable layer read-only, in O(1): its content stays where it is (no copy,
        no diff). Refused while the layer is mounted (LayerInUse)."""
        check_id(layer_id)
        if not self.exists(layer_id):
            raise LayerNotFound(layer_id)
        with self._refs.locked():
            if self._refs.holders(layer_id):
                raise LayerInUse(layer_id, "it is mounted; put it before committing it")
            self._set_readonly(layer_id)

    @contextlib.contextmanager
    def _writable(self, layer_id: str) -> Iterator[str]:
        """The layer mounted writable for apply_diff, read-only or not."""
        self._writers.add(layer_id)
        try:
            with self._mounted(layer_id) as path:
                yield path
        finally:
            self._writers.discard(layer_id)

    @contextlib.contextmanager
    def _mounted(self, layer_id: str) -> Iterator[str]:
        """The layer got for the block by this process (a diff reading it): if the process
        dies meanwhile, the next collect_dead_refs() puts it back."""
        me = this_process()
        path = self.get(layer_id, holder=me)
        try:
            yield path
        finally:
            self.put(layer_id, holder=me)

    # ------------------------------------------------------------------ mounting

    @abstractmethod
    def _mount(self, layer_id: str) -> str:
        """Make the layer available and return its path (called on the first get)."""

    @abstractmethod
    def _unmount(self, layer_id: str) -> None:
        """Undo _mount (called on the last put)."""

    def _is_mounted(self, layer_id: str) -> bool:
        """Is the layer's mount really there? Drivers that mount override this, so a count
        left over from a reboot or a killed process does not fake a mount."""
        return True

    def refcount(self, layer_id: str) -> int:
        """How many gets of the layer are not yet put back (across all processes)."""
        with self._refs.locked():
            return len(self._refs.holders(layer_id))

    def get(self, layer_id: str, mount_label: str = "", *, holder: str = PERSISTENT) -> str:
        """Mount the layer (on the first get) and return the path of its filesystem.
        `holder`: who holds the reference — PERSISTENT (the default, as a graphdriver's Get:
        it lasts until a put, whoever makes it) or a process (storagekit.owners), whose
        references are dropped once it is dead (collect_dead_refs)."""
        check_id(layer_id)
        if not self.exists(layer_id):
            raise LayerNotFound(layer_id)
        with self._refs.locked():
            holders = self._refs.holders(layer_id)
            # The reference first, then the mount: a process killed in the middle leaves a
            # reference of its own, and collect_dead_refs() undoes what it mounted.
            self._refs.write(layer_id, [*holders, holder])
            try:
                # A mount that vanished under its holders (a killed FUSE engine) is made
                # again; their references stay valid.
                if not holders or not self._is_mounted(layer_id):
                    return self._mount(layer_id)
                return self.path(layer_id)
            except BaseException:
                self._refs.write(layer_id, holders)
                raise

    def put(self, layer_id: str, *, holder: str = PERSISTENT) -> None:
        """Release one get of `holder` (see get); the last put unmounts."""
        check_id(layer_id)
        with self._refs.locked():
            holders = self._refs.holders(layer_id)
            if holder not in holders:
                raise LayerNotMounted(layer_id)
            holders.remove(holder)
            if not holders:
                self._unmount(layer_id)
            self._refs.write(layer_id, holders)

    def collect_dead_refs(self) -> list[str]:
        """Drop the references of processes that died holding them (killed in the middle of
        a diff or a container's run), unmounting the layers nobody holds any more. Returns
        those layers."""
        from .owners import is_alive

        unmounted = []
        with self._refs.locked():
            for layer_id in self._refs.layers():
                holders = self._refs.holders(layer_id)
                alive = [h for h in holders if is_alive(h)]
                if alive == holders:
                    continue
                if not alive and self.exists(layer_id):
                    # whether the mount was finished or not (devicemapper may have activated
                    # the device only): undoing it is the same
                    with contextlib.suppress(StorageError, OSError):
                        self._unmount(layer_id)
                    unmounted.append(layer_id)
                self._refs.write(layer_id, alive)
        return unmounted

    @abstractmethod
    def path(self, layer_id: str) -> str:
        """Where get() makes the layer's filesystem appear."""

    # ------------------------------------------------------------------ garbage

    def collect(self, known: set[str]) -> list[str]:
        """Remove what the home holds of layers that are not in `known` (every layer the
        store has a record of, in any state): whole layers, partial and doomed directories,
        records, counts and read-only markers a killed process left. Returns what went.
        Drivers add their own layout's leftovers to the base's (counts and markers)."""
        gone = []
        for layer_id in self._layer_ids():
            if layer_id not in known:
                with contextlib.suppress(StorageError, OSError):
                    self.release(layer_id)
                    self.remove(layer_id)
                    gone.append(f"layer {layer_id}")
        gone += self._refs.collect(known)
        for name in os.listdir(self._readonly_dir):
            if not name.startswith(".") and name not in known:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self._readonly_dir}/{name}")
                    gone.append(f"{self._readonly_dir}/{name}")
        return gone

    def _layer_ids(self) -> list[str]:
        """The ids of every layer in the home (complete ones; not partial or doomed)."""
        return []

    @staticmethod
    def _collect_leftovers(directory: str, known: set[str],
                           prefixes: tuple[str, ...] = (".partial-", ".removing-")) -> list[str]:
        """Remove `<prefix><id>` entries of directory (a layer being made or removed) whose
        layer the store does not know."""
        gone = []
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return gone
        for name in names:
            for prefix in prefixes:
                if name.startswith(prefix) and name[len(prefix):] not in known:
                    path = f"{directory}/{name}"
                    _native.umount_tree(path, detach=True)
                    if os.path.isdir(path) and not os.path.islink(path):
                        _native.remove_tree(path)
                    else:
                        os.unlink(path)
                    gone.append(path)
        return gone

    def cleanup(self) -> None:
        """Release everything: unmount every layer still mounted and forget the counts."""
        with self._refs.locked():
            for name in self._refs.layers():
                if self.exists(name) and self._is_mounted(name):
                    self._unmount(name)
                self._refs.write(name, [])

    def release(self, layer_id: str) -> None:
        """Drop every reference to the layer and unmount it, whoever took them (recovery
        after a crash, administrative cleanup)."""
        with self._refs.locked():
            # Mounted with no count at all is possible too: a process killed between its
            # mount and the count's write.
            if self.exists(layer_id) and self._is_mounted(layer_id):
                self._unmount(layer_id)
            self._refs.write(layer_id, [])

    def _check_removable(self, layer_id: str) -> None:
        if self.refcount(layer_id) > 0:
            raise LayerInUse(layer_id, "it is mounted; put it (storagekit layer umount) first")

    # ------------------------------------------------------------------ diffs

    #: How whiteouts are stored in the layer's own directory ("none" when they are not).
    dialect: ClassVar[str] = "none"

    def own_dir(self, layer_id: str) -> str | None:
        """The directory that holds exactly the layer's own changes against its parent,
        whiteouts in `dialect` (overlay's and aufs's diff directories), or None when the
        driver keeps no such directory (vfs, devicemapper: their diffs are naive)."""
        return None

    def _native_dir(self, layer_id: str, parent: str | None) -> str | None:
        """Where a native diff of layer_id against parent can be read or written: the layer's
        own directory, and only when parent is its direct parent (as Docker's drivers: any
        other parent needs the naive diff, comparing whole trees)."""
        if self.parent(layer_id) != parent:
            return None
        return self.own_dir(layer_id)

    def _parent_dirs(self, layer_id: str) -> list[str]:
        """The own directories (see own_dir) of the layer's parents that show through it,
        uppermost first: a native apply copies a hardlink's target up from them when only a
        parent has it. [] for drivers without own directories."""
        return []

    def export_diff(
        self, layer_id: str, parent: str | None, fd: int, compression: str = "none"
    ) -> dict[str, Any]:
        """Write the changes of layer_id against parent as an OCI layer tar to fd. parent
        None: the whole layer. Natively from the layer's own directory where there is one
        (see _native_dir), else the naive way: mount both and compare."""
        own = self._native_dir(layer_id, parent)
        if own is not None:
            return _native.export_tar(own, fd, dialect=self.dialect, compression=compression)
        with self._mounted(layer_id) as path:
            if parent is None:
                return _native.export_tar(path, fd, dialect="none", compression=compression)
            with self._mounted(parent) as ppath:
                changes = _native.changes(path, ppath)
                return _native.export_tar(
                    path, fd, dialect="none", changes=changes, compression=compression,
                    parent=ppath)

    def diff(self, layer_id: str, parent: str | None = None) -> BinaryIO:
        """The changes of layer_id against parent as a readable uncompressed tar stream."""
        self._check_exists(layer_id, parent)
        return ProducerStream(lambda fd: self.export_diff(layer_id, parent, fd))  # type: ignore[return-value]

    def changes(self, layer_id: str, parent: str | None = None) -> list[Change]:
        """What changed in layer_id against parent (None: everything is added); always by
        comparing the mounted trees."""
        self._check_exists(layer_id, parent)
        with self._mounted(layer_id) as path:
            if parent is None:
                raw = _native.changes(path, None)
            else:
                with self._mounted(parent) as ppath:
                    raw = _native.changes(path, ppath)
        return [Change(p, ChangeKind(k)) for p, k in raw]

    def apply_diff(
        self, layer_id: str, parent: str | None, stream: BinaryIO | int
    ) -> ApplyResult:
        """Apply a layer tar (plain, gzip or zstd) to layer_id, whose parent is `parent`:
        into its own directory where there is one, else through its mount."""
        self._check_exists(layer_id, None)
        own = self._native_dir(layer_id, parent)
        if own is not None:
            return self._apply_into(own, stream, self.dialect, self._parent_dirs(layer_id))
        with self._writable(layer_id) as path:
            return self._apply_into(path, stream, "none")

    def diff_size(self, layer_id: str, parent: str | None = None) -> int:
        """Bytes of regular-file data that changed in layer_id against parent."""
        self._check_exists(layer_id, parent)
        own = self._native_dir(layer_id, parent)
        if own is not None:
            return _native.tree_size(own)[0]
        with self._mounted(layer_id) as path:
            if parent is None:
                return _native.tree_size(path)[0]
            changes = self.changes(layer_id, parent)
            return _native.paths_size(
                path, [c.path for c in changes if c.kind != ChangeKind.DELETE]
            )

    # ------------------------------------------------------------------ helpers

    def _check_exists(self, layer_id: str, parent: str | None) -> None:
        for lid in (layer_id, parent):
            if lid is not None and not self.exists(check_id(lid)):
                raise LayerNotFound(lid)

    #: The most file data one applied tar may declare (holes included; 0: no limit): a
    #: few KB of sparse or compressed tar can declare a TiB. The store sets it from its
    #: max-layer-size option (storagekit.store.DEFAULT_MAX_LAYER_SIZE).
    max_layer_size: int = 0

    def _apply_into(self, path: str, stream: BinaryIO | int, dialect: str,
                    lowers: list[str] | None = None) -> ApplyResult:
        try:
            with readable_fd(stream) as fd:
                r = _native.apply_tar(fd, path, dialect=dialect, lowers=lowers,
                                      max_size=self.max_layer_size)
        except _native.ArchiveError as e:
            raise InvalidArchive(str(e)) from None
        return ApplyResult(r["size"], r["diff_id"], r["entries"], r["compression"])
