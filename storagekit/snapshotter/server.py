"""The gRPC server: containerd.services.snapshots.v1.Snapshots on a unix socket, each call
answered by the SnapshotService in one of grpcio's worker threads.

Errors travel as the gRPC status codes containerd's errdefs.FromGRPC maps back to its own
errors: NotFound, AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable (the store
is busy or cannot be reached); anything else is Unknown, with the one-line message.

SIGTERM (or SIGINT) stops the server: it stops taking calls, lets those in progress end (up
to SHUTDOWN_TIMEOUT), removes its socket and closes the store. Nothing is lost: every
snapshot is in the store, and a server started again serves them as they were.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from storagekit.driver import Mount
from storagekit.errors import (
    InvalidArchive,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StorageError,
    StoreError,
)
from storagekit.sockets import claim_socket, release_socket

from . import keys
from .api import mount_pb2, snapshots_pb2, snapshots_pb2_grpc
from .service import FailedPrecondition, Info, SnapshotService

log = logging.getLogger("storagekit.snapshotter")

#: Seconds the calls in progress get to finish when the server is stopped.
SHUTDOWN_TIMEOUT = 10.0
#: Worker threads: the calls that may run at once (containerd unpacks layers in parallel).
WORKERS = 16
#: The largest request accepted, in bytes (labels and keys are bounded well below it).
MAX_MESSAGE = 4 * 1024 * 1024
#: Infos per List response message.
LIST_BATCH = 100
NAMESPACE_HEADER = "containerd-namespace"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_KINDS = {"view": snapshots_pb2.VIEW, "active": snapshots_pb2.ACTIVE,
          "committed": snapshots_pb2.COMMITTED}

T = TypeVar("T")


def status_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC code containerd expects for a storagekit error."""
    if isinstance(error, LayerNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, LayerExists):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(error, (FailedPrecondition, LayerInUse)):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, (InvalidArgument, InvalidArchive)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, (StoreError, sqlite3.OperationalError)):  # e.g. the database is locked
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.UNKNOWN


def _mounts(mounts: list[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
            for m in mounts]


def _timestamp(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    seconds = int(t)
    ts.seconds, ts.nanos = seconds, int(round((t - seconds) * 1e9)) % 1_000_000_000
    return ts


def _info(info: Info) -> snapshots_pb2.Info:
    return snapshots_pb2.Info(name=info.name, parent=info.parent, kind=_KINDS[info.kind],
                              created_at=_timestamp(info.created),
                              updated_at=_timestamp(info.updated), labels=info.labels)


class Servicer(snapshots_pb2_grpc.SnapshotsServicer):
    """Each rpc: the namespace from its metadata, the service's answer, errors as codes."""

    def __init__(self, service: SnapshotService) -> None:
        self.service = service

    def _call(self, context: grpc.ServicerContext, what: str, fn: Callable[[str | None], T]) -> T:
        try:
            # containerd's client puts a context's latest namespace first, before those it
            # had (namespaces.WithNamespace), and its servers take the first: so do we.
            given = [v for k, v in context.invocation_metadata() if k == NAMESPACE_HEADER]
            namespace = keys.check_namespace(given[0]) if given else None
            return fn(namespace)
        except (StorageError, sqlite3.OperationalError) as e:
            code = status_code(e)
            log.log(logging.DEBUG if code != grpc.StatusCode.UNKNOWN else logging.WARNING,
                    "%s: %s: %s", what, code.name, e)
            context.abort(code, str(e))
        except OSError as e:
            log.warning("%s: %s", what, e)
            context.abort(grpc.StatusCode.UNKNOWN, f"{what}: {e.strerror or e}"
                          + (f": {e.filename}" if e.filename else ""))
        raise AssertionError("unreachable")  # context.abort raises

    def Prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, "prepare", lambda ns: self.service.prepare(
            ns, request.key, request.parent, dict(request.labels)))
        return snapshots_pb2.PrepareSnapshotResponse(mounts=_mounts(mounts))

    def View(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, "view", lambda ns: self.service.view(
            ns, request.key, request.parent, dict(request.labels)))
        return snapshots_pb2.ViewSnapshotResponse(mounts=_mounts(mounts))

    def Mounts(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, "mounts", lambda ns: self.service.mounts(ns, request.key))
        return snapshots_pb2.MountsResponse(mounts=_mounts(mounts))

    def Commit(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, "commit", lambda ns: self.service.commit(
            ns, request.name, request.key, dict(request.labels)))
        return empty_pb2.Empty()

    def Remove(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, "remove", lambda ns: self.service.remove(ns, request.key))
        return empty_pb2.Empty()

    def Stat(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self._call(context, "stat", lambda ns: self.service.stat(ns, request.key))
        return snapshots_pb2.StatSnapshotResponse(info=_info(info))

    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self._call(context, "update", lambda ns: self.service.update(
            ns, request.info.name, dict(request.info.labels), list(request.update_mask.paths)))
        return snapshots_pb2.UpdateSnapshotResponse(info=_info(info))

    def List(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # The whole listing is read before the first message goes, so that an error (a bad
        # filter) is a status, not a cut stream.
        infos = self._call(context, "list", lambda ns: list(
            self.service.list(ns, list(request.filters))))
        for i in range(0, len(infos), LIST_BATCH):
            yield snapshots_pb2.ListSnapshotsResponse(
                info=[_info(x) for x in infos[i:i + LIST_BATCH]])

    def Usage(self, request: Any, context: grpc.ServicerContext) -> Any:
        size, inodes = self._call(context, "usage", lambda ns: self.service.usage(
            ns, request.key))
        return snapshots_pb2.UsageResponse(size=size, inodes=inodes)

    def Cleanup(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, "cleanup", lambda ns: self.service.cleanup())
        return empty_pb2.Empty()


def serve(service: SnapshotService, path: str, name: str) -> None:
    """Serve the snapshotter on the unix socket at path until SIGTERM or SIGINT."""
    path = os.path.abspath(path)
    claim_socket(path)
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in STOP_SIGNALS}
    executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="snapshotter")
    server = grpc.server(executor, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ])
    snapshots_pb2_grpc.add_SnapshotsServicer_to_server(Servicer(service), server)
    if server.add_insecure_port(f"unix:{path}") == 0:
        raise InvalidArgument(f"{path}: cannot listen on this socket")
    server.start()
    inode = None
    try:
        os.chmod(path, 0o660)
        inode = os.lstat(path).st_ino
        log.info("serving %s on %s (driver %s, store %s)", name, path, service.driver_name,
                 service.store.root_dir)
        while not stopping.wait(3600):
            pass
        log.info("stopping")
    finally:
        server.stop(SHUTDOWN_TIMEOUT).wait()
        executor.shutdown(wait=True)
        release_socket(path, inode)
        # From here until the process ends (closing the store) a second signal changes
        # nothing: the calls were waited for above.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
