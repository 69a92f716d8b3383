"""A minimal container runtime: boot a command from an image on any driver.

run() makes a read-write layer on the image's top layer, mounts it with the driver (get),
starts the command in new mount, pid, uts, ipc and net namespaces (a user namespace on request:
storagekit/idmap.py says whose ids it gets; its rootfs is nodev) with the layer as its root
(storagekit._native.spawn_container: pivot_root, /proc, a minimal /dev), waits for it, and
puts the layer back — removing it with rm — whatever happens: the command fails, the runtime
is interrupted, or storagekit itself is killed (then the kernel kills the container with its
parent and the next store user reaps the record).

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the runtime are forwarded to the container's
pid 1; a second Ctrl-C kills it. The exit status is the container's: its exit code, or 128+N
when it was killed by signal N.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import time
from collections import namedtuple

from . import _native
from .errors import ContainerNotFound, InvalidArgument, LayerExists, StorageError
from .fsutil import lock, try_lock
from .image import DEFAULT_PATH, Images
from .owners import process_start, this_process
from .schema import Schema
from .store import Store

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator, Sequence
    from typing import Any

    from .idmap import IdRange

SCHEMA = Schema("containers", {"containers"}, [
    # 1: one row per container
    """
    CREATE TABLE IF NOT EXISTS containers (
        name      TEXT PRIMARY KEY,
        layer     TEXT NOT NULL,
        image     TEXT NOT NULL,
        command   TEXT NOT NULL,
        created   REAL NOT NULL,
        state     TEXT NOT NULL CHECK (state IN ('created', 'running', 'exited')),
        pid       INTEGER,
        pid_start INTEGER,
        exit_code INTEGER,
        remove    INTEGER NOT NULL DEFAULT 0
    )
    """,
])

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class RunSpec:
    """What to run: the image, and what the command line may set over its config."""

    def __init__(
        self,
        image: str,
        command: Sequence[str] = (),      # replaces the image's Cmd when given
        name: str | None = None,
        rm: bool = False,
        hostname: str | None = None,
        env: Sequence[str] = (),          # KEY=VALUE, over the image's Env
        workdir: str | None = None,
        user: str | None = None,          # UID[:GID] (or names from the image)
        user_namespace: bool = False,     # ids from /etc/subuid, /etc/subgid (storagekit.idmap)
        host_network: bool = False,
        readonly: bool = False,
        stdin: int = 0,
        stdout: int = 1,
        stderr: int = 2,
    ) -> None:
        """What to run, as `storagekit run`'s options: `image` (a name in the store),
        `command` (replaces the image's Cmd), `name` (default: generated), `rm` (remove the
        container and its layer when it exits), `hostname`, `env` (KEY=VALUE over the image's
        Env), `workdir`, `user` (UID[:GID] or names from the image's /etc/passwd),
        `user_namespace` (container root maps to an unprivileged host range), `host_network`,
        `readonly` (the root filesystem), and the file descriptors the container gets as its
        stdin, stdout and stderr."""
        self.image, self.command, self.name, self.rm = image, list(command), name, rm
        self.hostname, self.env, self.workdir, self.user = hostname, list(env), workdir, user
        self.user_namespace, self.host_network, self.readonly = (
            user_namespace, host_network, readonly)
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"RunSpec({fields})"


class Container(namedtuple("Container", "name layer image command created state pid exit_code")):
    """A container of the store: its name, its layer, its image, the command it runs,
    when it was made, its state (created, running, exited), its pid while it runs and its
    exit code once it exited."""

    name: str
    layer: str
    image: str
    command: list[str]
    created: float
    state: str
    pid: int | None
    exit_code: int | None
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what --json prints)."""
        return self._asdict()


def merge_env(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    env: dict[str, str] = {}
    for item in [*base, *extra]:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise InvalidArgument(f"environment entries look like KEY=VALUE, not {item!r}")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    env.setdefault("HOME", "/root")
    return [f"{k}={v}" for k, v in env.items()]


#: The largest /etc/passwd or /etc/group read from an image (a real one has a few KiB).
TABLE_LIMIT = 1 << 20

#: The largest user or group id: the kernel takes (uid_t)-1 as "no change", never as an id.
MAX_ID = 2**32 - 2


def parse_id(text: str, what: str) -> int:
    """A user or group id as the kernel accepts it: decimal, 0 to MAX_ID; else
    InvalidArgument naming `what`."""
    # Ten digits at most: int() of a huge string is slow (and refused past 4300 digits).
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or int(text) > MAX_ID:
        raise InvalidArgument(f"{what} {text!r} is not a valid id (0 to {MAX_ID})")
    return int(text)


def _looks_numeric(name: str) -> bool:
    # Names in passwd and group start with a letter or "_"; anything else is meant as an id.
    return name[:1] in tuple("+-0123456789")


def _read_table(rootfs: str, table: str) -> list[list[str]]:
    """The entries of the image's /etc/passwd or /etc/group; a missing file is an empty
    table. The path is resolved inside the rootfs (a symlink in the image, "/etc -> /home"
    say, resolves as it would in the container, never to a host file) and only a regular
    file of at most TABLE_LIMIT bytes is read: a FIFO, device or socket there is refused
    without being opened for reading (which could block, or never end)."""
    path = f"/etc/{table}"
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ref = _native.open_in_root(root, path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise InvalidArgument(f"cannot read the image's {path}: {e.strerror}") from None
    finally:
        os.close(root)
    try:
        st = os.fstat(ref)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"the image's {path} is not a regular file")
        if st.st_size > TABLE_LIMIT:
            raise InvalidArgument(f"the image's {path} is larger than {TABLE_LIMIT} bytes")
        # Reopened through the O_PATH descriptor: the very inode just checked.
        fd = os.open(f"/proc/self/fd/{ref}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(ref)
    with os.fdopen(fd, "rb") as f:
        data = f.read(TABLE_LIMIT + 1)  # the file may have grown since fstat
    if len(data) > TABLE_LIMIT:
        raise InvalidArgument(f"the image's {path} is larger than {TABLE_LIMIT} bytes")
    lines = data.decode(errors="replace").splitlines()
    return [line.split(":") for line in lines if line.count(":") >= 3]


def _entry_id(value: str, table: str, name: str) -> int:
    return parse_id(value, f"the image's /etc/{table} entry {name!r} has the id")


def resolve_user(rootfs: str, user: str) -> tuple[int, int]:
    """UID[:GID] or NAME[:GROUP] -> (uid, gid), names from the image. Without a group, the
    user's primary group from /etc/passwd, else 0 (as Docker does). Ids must be valid
    (parse_id), given or found in the image: InvalidArgument otherwise."""
    name, _, group = user.partition(":")
    name = name or "0"
    gid = parse_id(group, "group") if _looks_numeric(group) else None
    if _looks_numeric(name):
        uid = parse_id(name, "user")
        if gid is not None:
            return uid, gid  # nothing to look up
        entry = next((p for p in _read_table(rootfs, "passwd") if p[2] == name), None)
    else:
        entry = next((p for p in _read_table(rootfs, "passwd") if p[0] == name), None)
        if entry is None:
            raise InvalidArgument(f"no user {name!r} in the image's /etc/passwd")
        uid = _entry_id(entry[2], "passwd", name)
    if gid is not None:
        return uid, gid
    if group:
        found = next((g for g in _read_table(rootfs, "group") if g[0] == group), None)
        if found is None:
            raise InvalidArgument(f"no group {group!r} in the image's /etc/group")
        return uid, _entry_id(found[2], "group", group)
    return uid, _entry_id(entry[3], "passwd", entry[0]) if entry else 0


def reap_dead(store: Store) -> list[str]:
    """Containers.reap(), when there may be something to reap (one query otherwise)."""
    if store.db.execute("SELECT 1 FROM containers WHERE state != 'exited' OR remove = 1 "
                        "LIMIT 1").fetchone() is None:
        return []
    return Containers(store).reap()


class Containers:
    """Container records of one store, and the runtime that boots them."""

    def __init__(self, store: Store) -> None:
        """The containers of `store` (the containers table is made on first use)."""
        self.store = store
        self.images = Images(store)
        store.ensure_schema(SCHEMA)

    # ------------------------------------------------------------------ records

    def _container(self, row: Any) -> Container:
        return Container(row["name"], row["layer"], row["image"], json.loads(row["command"]),
                         row["created"], row["state"], row["pid"], row["exit_code"])

    def get(self, name: str) -> Container:
        """The container named `name`. Raises ContainerNotFound."""
        row = self.store.db.execute("SELECT * FROM containers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ContainerNotFound(name)
        return self._container(row)

    def list(self) -> list[Container]:
        """Every container of the store (running, exited and kept ones)."""
        self.reap()
        rows = self.store.db.execute("SELECT * FROM containers ORDER BY created").fetchall()
        return [self._container(r) for r in rows]

    def remove(self, name: str) -> None:
        """Remove a container that is not running, with its read-write layer. Raises
        ContainerNotFound, StorageError (it is running)."""
        self.reap()
        c = self.get(name)
        fd = try_lock(self._run_lock(c.layer))
        if fd is None or c.state == "running":
            if fd is not None:
                os.close(fd)
            raise StorageError(f"container {name!r} is running (pid {c.pid}); stop it first")
        try:
            self._discard(c.name, c.layer)
        finally:
            self._drop_run_lock(c.layer, fd)

    def _run_lock(self, layer: str) -> str:
        """locks/run-<layer>: held by the runtime of the container for as long as it lives,
        from its record's creation to its clean-up. Whoever can take it knows that runtime
        is gone (the kernel drops a dead process's locks): no timer, no pid guessing."""
        return f"{self.store.root_dir}/locks/run-{layer}"

    def _drop_run_lock(self, layer: str, fd: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._run_lock(layer))  # while held: nobody locks a vanishing file
        os.close(fd)

    def _discard(self, name: str, layer: str) -> None:
        """Remove the container: its record is marked for removal first, its read-write
        layer goes, then the image layers under it if their image was removed meanwhile and
        nothing else uses them, and the record last. A crash at any point leaves a record
        marked for removal, which the next reap() finishes. The caller holds the run lock."""
        with self.store.transaction():
            self.store.db.execute("UPDATE containers SET remove = 1 WHERE name = ?", (name,))
            if self.store.exists(layer):
                self.store.drop_ref(layer, f"container {name}")
        if self.store.exists(layer):
            parent = self.store.layer(layer).parent
            self.store.remove(layer)
            if parent is not None:
                self.images.prune(parent)
        with self.store.transaction():
            self.store.db.execute("DELETE FROM containers WHERE name = ?", (name,))

    def reap(self) -> list[str]:
        """Finish the records of containers whose runtime died without finishing them (its
        run lock is free): release their mount, and remove those started with rm or being
        removed. A container whose runtime lives is never touched."""
        done = []
        rows = self.store.db.execute(
            "SELECT * FROM containers WHERE state != 'exited' OR remove = 1").fetchall()
        for row in rows:
            fd = try_lock(self._run_lock(row["layer"]))
            if fd is None:
                continue  # its runtime is alive: running, starting or cleaning up
            try:
                if row["state"] != "exited":
                    with contextlib.suppress(StorageError):
                        self.store.driver.release(row["layer"])
                    with self.store.transaction():
                        self.store.db.execute(
                            "UPDATE containers SET state = 'exited', pid = NULL WHERE name = ?",
                            (row["name"],))
                if row["remove"]:
                    with contextlib.suppress(StorageError, OSError):
                        self._discard(row["name"], row["layer"])
            finally:
                self._drop_run_lock(row["layer"], fd)
            done.append(row["name"])
        return done

    # ------------------------------------------------------------------ running

    def run(self, spec: RunSpec) -> int:
        """Boot spec.command (or the image's) from spec.image; returns the exit status."""
        image = self.images.get(spec.image)
        cfg = image.runtime
        command = list(cfg.get("Entrypoint") or []) + list(spec.command or cfg.get("Cmd") or [])
        if not command:
            raise InvalidArgument(f"image {image.name} has no command; give one after the image")
        env = merge_env(cfg.get("Env") or [], spec.env)
        workdir = spec.workdir or cfg.get("WorkingDir") or "/"
        if not workdir.startswith("/"):
            raise InvalidArgument(f"the working directory must be absolute, not {workdir!r}")
        cid = os.urandom(16).hex()
        name = spec.name or cid[:12]
        layer = f"ctr-{cid}"
        hostname = spec.hostname or cfg.get("Hostname") or cid[:12]
        ranges = None
        if spec.user_namespace:
            from .idmap import host_ranges  # not on the boot path: --userns only

            ranges = host_ranges()
        self.reap()
        run_lock = lock(self._run_lock(layer))  # held until this runtime is done with it
        try:
            return self._run(spec, image, command, env, workdir, name, layer, hostname,
                             ranges)
        finally:
            self._drop_run_lock(layer, run_lock)

    def _run(self, spec: RunSpec, image: Any, command: list[str], env: list[str],
             workdir: str, name: str, layer: str, hostname: str,
             ranges: tuple[IdRange, IdRange] | None) -> int:
        with self.store.transaction():
            if self.store.db.execute("SELECT 1 FROM containers WHERE name = ?",
                                     (name,)).fetchone():
                raise LayerExists(f"{name} (a container with this name exists)")
            self.store.db.execute(
                "INSERT INTO containers(name, layer, image, command, created, state, remove) "
                "VALUES (?, ?, ?, ?, ?, 'created', ?)",
                (name, layer, image.name, json.dumps(command), time.time(), int(spec.rm)))
        cfg = image.runtime
        try:
            # A --rm container's layer goes when it exits: it need not be synced (overlay
            # then mounts it volatile, and its umount does not sync the backing filesystem).
            self.store.create(layer, image.top_layer, kind="active",
                              labels={"storagekit.container": name}, volatile=spec.rm)
            with self.store.transaction():
                self.store.add_ref(layer, f"container {name}")
            rootfs = self.store.get(layer, holder=this_process())
        except BaseException:
            with contextlib.suppress(StorageError, OSError):
                self._discard(name, layer)
            raise
        code: int | None = None
        try:
            uid, gid = resolve_user(rootfs, spec.user or cfg.get("User") or "0")
            if ranges is not None:
                from .idmap import shift_ownership

                for value, ids, what in [(uid, ranges[0], "user"), (gid, ranges[1], "group")]:
                    if value >= ids.count:
                        raise InvalidArgument(
                            f"{what} {value} is outside the --userns range (0 to "
                            f"{ids.count - 1})")
                shift_ownership(rootfs, *ranges)
            with _forwarding_signals() as forward:
                pid = _native.spawn_container(
                    rootfs, command, env, cwd=workdir, uid=uid, gid=gid, groups=[],
                    hostname=hostname, user_namespace=spec.user_namespace,
                    uid_map=ranges[0] if ranges else None,
                    gid_map=ranges[1] if ranges else None,
                    network=spec.host_network, readonly_rootfs=spec.readonly,
                    stdin=spec.stdin, stdout=spec.stdout, stderr=spec.stderr)
                forward.pid = pid
                with self.store.transaction():
                    self.store.db.execute(
                        "UPDATE containers SET state = 'running', pid = ?, pid_start = ? "
                        "WHERE name = ?", (pid, process_start(pid), name))
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                if code < 0:
                    code = 128 - code
            return code
        finally:
            # The exit code first; the record says exited only once the layer is put back:
            # if that fails, reap() releases the mount once this runtime is gone.
            with self.store.transaction():
                self.store.db.execute("UPDATE containers SET pid = NULL, exit_code = ? "
                                      "WHERE name = ?", (code, name))
            self.store.put(layer, holder=this_process())
            with self.store.transaction():
                self.store.db.execute("UPDATE containers SET state = 'exited' WHERE name = ?",
                                      (name,))
            if spec.rm:
                self._discard(name, layer)


KILL_GRACE = 10.0  # seconds a container has to act on a forwarded signal


class _Forwarder:
    pid: int | None = None
    signals = 0
    timer: threading.Timer | None = None

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


@contextlib.contextmanager
def _forwarding_signals() -> Iterator[_Forwarder]:
    """While the container runs, signals to the runtime go to its pid 1. As pid 1 it only
    sees signals it handles (a shell does not), so a second signal, or KILL_GRACE seconds
    without exiting, kills it. Outside the main thread nothing can be forwarded."""
    fwd = _Forwarder()

    def handler(signum: int, _frame: Any) -> None:
        if fwd.pid is None:
            raise KeyboardInterrupt
        fwd.signals += 1
        if fwd.signals > 1:
            fwd.kill()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(fwd.pid, signum)
        # Imported here, not on every boot. The main thread is then in waitpid or the
        # store, never inside an import, so importing from the handler cannot deadlock.
        import threading

        fwd.timer = threading.Timer(KILL_GRACE, fwd.kill)
        fwd.timer.daemon = True
        fwd.timer.start()

    previous = {}
    try:
        for sig in FORWARDED:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield fwd
    finally:
        if fwd.timer is not None:
            fwd.timer.cancel()
        fwd.pid = None
        for sig, old in previous.items():
            signal.signal(sig, old)
