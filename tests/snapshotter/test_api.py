"""List's filters, Update's field masks, namespaces and bad requests, on every driver."""

from __future__ import annotations

import os
import time

import grpc
import pytest
from snapclient import KIND, SnapClient, code_of

NF, AE = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS
FP, IA = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT


def _tree(c: SnapClient) -> None:
    """base (committed) <- a1 (active), v1 (view); c2 (committed, no parent) <- c3 (committed)"""
    c.prepare("k-base")
    c.commit("base", "k-base", labels={"containerd.io/gc.root": "check-walk", "x": "1"})
    c.prepare("a1", "base", labels={"l": "v", "a.b": "dotted"})
    c.view("v1", "base")
    c.prepare("k2")
    c.commit("c2", "k2")
    c.prepare("k3", "c2")
    c.commit("c3", "k3", labels={"x": "2"})


@pytest.mark.parametrize("filters, expected", [
    ((), ["a1", "base", "c2", "c3", "v1"]),
    (("",), ["a1", "base", "c2", "c3", "v1"]),
    (("kind==active",), ["a1"]),
    (("kind==view",), ["v1"]),
    (("kind==committed",), ["base", "c2", "c3"]),
    (("name==c2",), ["c2"]),
    (("parent==base",), ["a1", "v1"]),
    (('parent!=""',), ["a1", "c3", "v1"]),
    (('labels."containerd.io/gc.root"==check-walk',), ["base"]),
    (("labels.l",), ["a1"]),
    (("labels.a.b==dotted",), ["a1"]),
    (("labels.x!=1",), ["a1", "c3", "v1", "c2"]),  # != matches an absent label too
    (("name~=^c[0-9]$",), ["c2", "c3"]),
    (("kind==committed,labels.x==2",), ["c3"]),  # comma: all of them
    (("name==a1", "name==v1"), ["a1", "v1"]),  # several filters: any of them
    (("name==nothing",), []),
])
def test_list_filters(client, filters, expected):
    _tree(client)
    assert client.names(*filters) == sorted(expected)


def test_list_infos(client):
    _tree(client)
    infos = {i.name: i for i in client.list()}
    assert KIND[infos["a1"].kind] == "active" and infos["a1"].parent == "base"
    assert dict(infos["base"].labels) == {"containerd.io/gc.root": "check-walk", "x": "1"}
    assert infos["c3"].parent == "c2" and infos["c2"].parent == ""
    assert {n: client.stat(n) for n in infos} == infos  # List and Stat agree


def test_list_streams_in_several_messages(server, client):
    # past one message (100 infos); on devicemapper each snapshot holds a loop device
    count = 101 if server.driver == "devicemapper" else 230
    for i in range(count):
        client.view(f"view-{i}")
    assert len(client.list()) == count
    assert client.names(f"name==view-{count - 1}") == [f"view-{count - 1}"]


@pytest.mark.parametrize("bad", ["==x", "name=x", 'labels."open', "name==a b", "name~=("])
def test_bad_filter(client, bad):
    assert code_of(client.list, bad) == IA


def test_update_field_masks(client):
    client.prepare("k", labels={"a": "1", "b": "2", "c": "3"})
    created = client.stat("k").created_at.ToNanoseconds()
    time.sleep(0.01)
    info = client.update("k", {"a": "10", "z": "26"}, ["labels.a", "labels.b"])
    assert dict(info.labels) == {"a": "10", "c": "3"}  # b not given: removed; z not named
    assert info.created_at.ToNanoseconds() == created
    assert info.updated_at.ToNanoseconds() > created
    info = client.update("k", {"n": "1"}, ["labels"])
    assert dict(info.labels) == {"n": "1"}
    info = client.update("k", {"m": "2"})  # no mask: every mutable field
    assert dict(info.labels) == {"m": "2"}
    assert dict(client.stat("k").labels) == {"m": "2"}
    assert KIND[info.kind] == "active" and info.name == "k"
    for immutable in ("name", "parent", "kind", "created_at"):
        assert code_of(client.update, "k", {}, [immutable]) == IA
    assert code_of(client.update, "nothing", {"a": "b"}) == NF
    assert code_of(client.update, "k", {"a": "x" * 4096}) == IA
    assert dict(client.stat("k").labels) == {"m": "2"}


def test_namespaces_never_see_each_other(server, client):
    other = client.ns(client.namespace + "-other")
    try:
        client.prepare("same", labels={"who": "first"})
        other.prepare("same", labels={"who": "second"})
        client.commit("base", "same")
        assert dict(other.stat("same").labels) == {"who": "second"}
        assert code_of(other.stat, "base") == NF
        assert code_of(other.prepare, "x", "base") == NF  # a parent of another namespace
        assert other.names() == ["same"] and client.names() == ["base"]
        # without a namespace (containerd's garbage collector): every namespace's
        everyone = client.ns(None)
        assert {"same", "base"} <= set(everyone.names())
        assert KIND[everyone.stat("base").kind] == "committed"
        other.commit("base", "same")
        assert code_of(everyone.stat, "base") == FP  # in two namespaces: which one?
        other.remove("base")
        everyone.remove("base")  # now only in the client's namespace
        assert client.names() == []
    finally:
        for name in other.names():
            other.remove(name)
        other.close()


def test_the_first_namespace_header_wins(server, client):
    """containerd's client puts a context's latest namespace first, before those it had
    (namespaces.WithNamespace), and containerd's servers take the first."""
    from storagekit.snapshotter.api import snapshots_pb2 as pb

    client.stub.Prepare(pb.PrepareSnapshotRequest(key="nested"), metadata=[
        ("containerd-namespace", client.namespace), ("containerd-namespace", "outer")])
    assert client.names() == ["nested"]
    assert client.ns("outer").names() == []


def test_bad_requests(server, client):
    client.prepare("act")
    client.view("vw")
    client.prepare("k")
    client.commit("committed", "k")
    for call in (client.stat, client.mounts, client.remove, client.usage):
        assert code_of(call, "unknown") == NF
    assert code_of(client.commit, "n", "unknown") == NF
    assert code_of(client.prepare, "x", "unknown") == NF
    assert code_of(client.view, "x", "unknown") == NF
    assert code_of(client.prepare, "x", "act") == IA  # an active parent
    assert code_of(client.prepare, "x", "vw") == IA  # a view as parent
    for taken in ("act", "vw", "committed"):
        assert code_of(client.prepare, taken) == AE
        assert code_of(client.view, taken) == AE
    client.prepare("act2")
    assert code_of(client.commit, "committed", "act2") == AE
    assert code_of(client.commit, "x", "vw") == FP  # a view cannot be committed
    assert code_of(client.commit, "x", "committed") == FP
    assert code_of(client.prepare, "big", "", {"k": "v" * 4096}) == IA  # over 4096 a pair
    client.prepare("fits", "", {"k": "v" * 4095})
    # bytes, not characters: 2100 two-byte characters are 4200 bytes
    assert code_of(client.prepare, "wide", "", {"k": "é" * 2100}) == IA
    assert code_of(client.commit, "wide", "act2", {"k": "é" * 2100}) == IA
    assert code_of(client.update, "act2", {"k": "é" * 2100}) == IA
    for key in ("", "with\0nul", "k" * 10240):
        assert code_of(client.prepare, key) == IA
        assert code_of(client.stat, key) == IA
    assert code_of(client.commit, "", "act2") == IA
    assert code_of(client.ns("bad/namespace").list) == IA
    # keys are names, never paths: nothing is made outside the store
    escape = f"/tmp/sk-snapserver-escape-{os.getpid()}"
    for key in ("a/b/c", "..", "../..", f"../../../../../../..{escape}", "/abs/key",
                "extract-123 sha256:abc", "ünï ✓"):
        client.prepare(key)
        assert client.stat(key).name == key
        client.remove(key)
    assert not os.path.exists(escape)
    assert not any(p.name.startswith("..") for p in server.store.iterdir())
    assert sorted(client.names()) == ["act", "act2", "committed", "fits", "vw"]
