"""What dead processes leave in a store, and its collection.

A process that dies in the middle of its work (kill -9, a crash, the host going down) leaves
things that only it would have finished:
- layers in a transitional state (being created, applied or removed): their layer lock is free
  once the process is dead, and they are discarded (recover);
- layers an import was building on, held by the import's process reference
  (storagekit.owners): the reference is dropped, and the layers that nothing else references
  or builds on go;
- references (mounts) of the layers a process got (a diff, a container's run): dropped, and
  the mounts undone (Driver.collect_dead_refs);
- temporary paths outside the store (an export's staging, an output being written) that it
  registered with the store first (scratch);
- in the driver's home: partial and doomed directories, stale counts and markers, temporary
  files (prune, which holds the store lock while it looks, so nothing in progress is taken
  for garbage).

collect() runs at every open of a store and costs one query and a listdir when there is
nothing to do; prune() (`storagekit prune`) adds the driver's thorough pass.
"""

from __future__ import annotations

import contextlib
import os

from . import owners
from .errors import StorageError
from .fsutil import lock

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Iterator

    from .store import Store


def recover(store: Store) -> list[str]:
    """Remove layers left half-made by processes that died; returns their ids."""
    removed: list[str] = []
    if not store._db.execute("SELECT 1 FROM layers WHERE state != 'ready' LIMIT 1").fetchone():
        return removed  # the usual case, without taking the store lock
    with store._locked():
        rows = store._db.execute(
            "SELECT id FROM layers WHERE state != 'ready' ORDER BY created DESC"
        ).fetchall()
        for row in rows:
            if recover_one(store, row["id"]):
                removed.append(row["id"])
    return removed


def recover_one(store: Store, layer_id: str) -> bool:
    """Discard one layer a dead process left in a transitional state (store lock held).
    False if its owner is alive, or if it cannot be discarded now (a device still busy):
    then it stays invisible and the next open tries again, and this open goes on."""
    fd = store._take_layer_lock(layer_id)
    if fd is None:
        return False  # its owner is alive and still working
    try:
        from .store import staging_key

        if store._db.execute("SELECT 1 FROM meta WHERE key = ?",
                             (staging_key(layer_id),)).fetchone():
            # an apply that had not yet touched the layer: drop its scratch child, keep it
            _drop_staging(store, layer_id)
            store._db.execute("UPDATE layers SET state = 'ready', owner = NULL WHERE id = ?",
                              (layer_id,))
            store._db.execute("DELETE FROM meta WHERE key = ?", (staging_key(layer_id),))
            return False  # restored, not discarded: it is there still
        store._discard(layer_id)
    except (StorageError, OSError):
        return False
    finally:
        store._drop_layer_lock(layer_id, fd)
    return True


def _drop_staging(store: Store, layer_id: str) -> None:
    from .store import staging_layer

    scratch = staging_layer(layer_id)
    if store.driver.exists(scratch):
        store.driver.release(scratch)
        store.driver.remove(scratch)


def wait_for(store: Store, layer_id: str) -> None:
    """Wait (outside the store lock) until no live process is changing the layer: a
    second creator of a layer waits for the first, as containerd's content store makes a
    second writer of a blob wait. If the owner died, its leftovers are discarded."""
    try:
        fd = lock(f"{store.root_dir}/locks/{layer_id}", shared=True, create=False)
    except FileNotFoundError:
        return
    os.close(fd)
    with store._locked():
        row = store._db.execute("SELECT state FROM layers WHERE id = ?",
                              (layer_id,)).fetchone()
        if row is not None and row["state"] != "ready":
            recover_one(store, layer_id)


def collect(store: Store) -> list[str]:
    """Collect what dead processes left (run at every open; cheap when there is
    nothing): layers half made or half removed (recover()); references of dead processes,
    and the layers they made that nothing else references or builds on; temporary paths
    outside the store that a dead process registered (scratch()). Returns what went: layer
    ids and paths."""
    gone = recover(store)
    gone += [f"mount of {lid}" for lid in store.driver.collect_dead_refs()]
    holders = {r[0] for r in store._db.execute(
        "SELECT DISTINCT owner FROM layer_refs WHERE owner LIKE 'process %' "
        "UNION SELECT owner FROM scratch")}
    dead = [o for o in holders if not owners.is_alive(o)]
    for owner in dead:
        gone += _collect_owner(store, owner)
    return gone


def _collect_owner(store: Store, owner: str) -> list[str]:
    gone = []
    with store._locked():
        layers = [r[0] for r in store._db.execute(
            "SELECT r.layer FROM layer_refs r JOIN layers l ON l.id = r.layer "
            "WHERE r.owner = ? ORDER BY l.created DESC", (owner,))]
        store._db.execute("DELETE FROM layer_refs WHERE owner = ?", (owner,))
        paths = [r[0] for r in store._db.execute(
            "SELECT path FROM scratch WHERE owner = ?", (owner,))]
    for layer_id in layers:  # children first: a parent may go once its child has
        with contextlib.suppress(StorageError, OSError):
            if not store.refs(layer_id) and not store.children(layer_id):
                store.remove(layer_id)
                gone.append(layer_id)
    for path in paths:
        with contextlib.suppress(OSError):
            remove_path(path)
        with store._locked():
            store._db.execute("DELETE FROM scratch WHERE path = ?", (path,))
        gone.append(path)
    return gone


@contextlib.contextmanager


def scratch(store: Store, path: str) -> Iterator[str]:
    """`with store.scratch(path):` — a temporary file or directory outside the store
    (a staging directory, an output being written) that this process is about to make:
    it is recorded first, so that if the process dies, the next open removes it. On leaving
    the block whatever is still at path is removed and the record dropped (rename the
    result away before that to keep it)."""
    path = os.path.abspath(path)
    with store._locked():
        store._db.execute("INSERT OR REPLACE INTO scratch(path, owner) VALUES (?, ?)",
                          (path, owners.this_process()))
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            remove_path(path)
        with store._locked():
            store._db.execute("DELETE FROM scratch WHERE path = ?", (path,))


def prune(store: Store) -> list[str]:
    """collect(), and what it leaves to a thorough pass: the driver's leftovers of dead
    processes (partial and doomed directories, temporary files) and lock files of layers
    that are gone. Returns what went."""
    from .store import staging_layer

    gone = collect(store)
    with store._locked():
        # Under the store lock: a layer that is being made has its row already, and one
        # begun after this has not made anything in the driver yet.
        known = {r[0] for r in store._db.execute("SELECT id FROM layers")}
        # and the scratch child an apply in progress stages its tar in (Store._apply_staged)
        known |= {staging_layer(r[0]) for r in store._db.execute(
            "SELECT id FROM layers WHERE state = 'applying'")}
        gone += store.driver.collect(known)
    for name in os.listdir(store.root_dir + "/locks"):
        layer = name.removeprefix("run-")
        if layer in known or name.startswith("."):
            continue
        fd = store._take_layer_lock(name)  # nobody works on it: safe to unlink
        if fd is not None:
            store._drop_layer_lock(name, fd)
            gone.append(f"{store.root_dir}/locks/{name}")
    return gone


def remove_path(path: str) -> None:
    """Remove a file or a whole tree (never following symlinks out of it)."""
    if os.path.isdir(path) and not os.path.islink(path):
        from . import _native

        _native.umount_tree(path, detach=True)
        _native.remove_tree(path)
    else:
        os.unlink(path)
