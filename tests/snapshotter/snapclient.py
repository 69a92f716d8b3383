"""A client of the snapshotter's gRPC service for the tests, from the project's own stubs:
one method per rpc, the containerd namespace sent as containerd's proxy client sends it."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from storagekit.snapshotter.api import snapshots_pb2 as pb
from storagekit.snapshotter.api import snapshots_pb2_grpc

KIND = {pb.VIEW: "view", pb.ACTIVE: "active", pb.COMMITTED: "committed"}


class SnapClient:
    def __init__(self, socket: str, namespace: str | None = "default",
                 snapshotter: str = "storagekit") -> None:
        self.socket, self.namespace, self.snapshotter = socket, namespace, snapshotter
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub = snapshots_pb2_grpc.SnapshotsStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SnapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, namespace: str | None) -> SnapClient:
        """A client of the same server for another namespace (None: no header)."""
        return SnapClient(self.socket, namespace, self.snapshotter)

    def _md(self) -> list[tuple[str, str]]:
        return [] if self.namespace is None else [("containerd-namespace", self.namespace)]

    def _call(self, rpc, request):
        return rpc(request, metadata=self._md(), timeout=120)

    def prepare(self, key: str, parent: str = "", labels: dict | None = None) -> list:
        r = self._call(self.stub.Prepare, pb.PrepareSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return list(r.mounts)

    def view(self, key: str, parent: str = "", labels: dict | None = None) -> list:
        r = self._call(self.stub.View, pb.ViewSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return list(r.mounts)

    def mounts(self, key: str) -> list:
        return list(self._call(self.stub.Mounts, pb.MountsRequest(
            snapshotter=self.snapshotter, key=key)).mounts)

    def commit(self, name: str, key: str, labels: dict | None = None) -> None:
        self._call(self.stub.Commit, pb.CommitSnapshotRequest(
            snapshotter=self.snapshotter, name=name, key=key, labels=labels or {}))

    def remove(self, key: str) -> None:
        self._call(self.stub.Remove, pb.RemoveSnapshotRequest(
            snapshotter=self.snapshotter, key=key))

    def stat(self, key: str):
        return self._call(self.stub.Stat, pb.StatSnapshotRequest(
            snapshotter=self.snapshotter, key=key)).info

    def update(self, name: str, labels: dict, paths: list[str] | None = None):
        return self._call(self.stub.Update, pb.UpdateSnapshotRequest(
            snapshotter=self.snapshotter, info=pb.Info(name=name, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=paths or []))).info

    def list(self, *filters: str) -> list:
        out = []
        for r in self.stub.List(pb.ListSnapshotsRequest(
                snapshotter=self.snapshotter, filters=list(filters)),
                metadata=self._md(), timeout=120):
            out += list(r.info)
        return out

    def names(self, *filters: str) -> list[str]:
        return sorted(i.name for i in self.list(*filters))

    def usage(self, key: str) -> tuple[int, int]:
        r = self._call(self.stub.Usage, pb.UsageRequest(snapshotter=self.snapshotter, key=key))
        return r.size, r.inodes

    def cleanup(self) -> None:
        self._call(self.stub.Cleanup, pb.CleanupRequest(snapshotter=self.snapshotter))


def code_of(fn, *args, **kw) -> grpc.StatusCode:
    """The status code fn's call fails with (AssertionError if it succeeds)."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError(f"{fn.__name__}{args} succeeded")
