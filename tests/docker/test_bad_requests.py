"""Requests the plugin must refuse: each answered with a one-line {"Err"} and a non-200
status, never a crash, never a write outside a layer — and the plugin serves on afterwards."""

from __future__ import annotations

import io
import os
import secrets
import tarfile

import pytest
from graphclient import PluginError
from refusals import refused


def new_id() -> str:
    return secrets.token_hex(32)


# ---------------------------------------------------------------------- every driver


def test_unknown_ids(graph):
    c = graph.client
    nope = new_id()
    for call in (c.get, c.put, c.remove, c.metadata, c.diff, c.changes, c.diff_size):
        refused(call, nope, status=404, says="does not exist")
    refused(c.apply_diff, nope, "", b"", status=404, says="does not exist")
    assert c.exists(nope) is False
    base = new_id()
    c.create(base)
    refused(c.diff, base, nope, status=404)  # a parent that is not there
    refused(c.changes, base, nope, status=404)
    c.remove(base)


def test_missing_parent(graph):
    c = graph.client
    lid = new_id()
    refused(c.create, lid, new_id(), status=404, says="does not exist")
    refused(c.create, lid, new_id(), rw=True, status=404)
    assert not c.exists(lid)


def test_create_twice_and_invalid_ids(graph):
    c = graph.client
    lid = new_id()
    c.create(lid)
    refused(c.create, lid, status=409, says="already exists")
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 300):
        with pytest.raises(PluginError) as e:
            c.create(bad)
        assert e.value.status == 400, (bad, e.value)
    c.remove(lid)


def test_remove_of_a_layer_in_use(graph):
    c = graph.client
    parent, child = new_id(), new_id()
    c.create(parent)
    c.create(child, parent, rw=True)
    refused(c.remove, parent, status=409, says="children")
    c.get(child)
    refused(c.remove, child, status=409, says="mounted")
    c.put(child)
    refused(c.put, child, status=409, says="not mounted")  # a put needs its get
    c.remove(child)
    c.remove(parent)


def hostile_tars() -> dict[str, bytes]:
    def tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for info, data in members:
                if data is not None:
                    info.size = len(data)
                t.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = kind, link, 0o644
        return info

    outside = OUTSIDE
    return {
        "dotdot path": tar((entry(f"../../../../../../..{outside}/dotdot"), b"pwned")),
        "absolute symlink then through it": tar(
            (entry("escape", tarfile.SYMTYPE, outside), None),
            (entry("escape/through-symlink"), b"pwned")),
        "relative symlink then through it": tar(
            (entry("up", tarfile.SYMTYPE, "../../../../../../../../.." + outside), None),
            (entry("up/through-relative"), b"pwned")),
        "hardlink to a host file": tar((entry("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)),
        "truncated": tar((entry("big"), b"x" * 100_000))[:20_000],
        "not a tar": b"this is not a tar archive at all, just bytes " * 100,
    }


OUTSIDE = "/tmp/storagekit-docker-hostile-target"


@pytest.mark.parametrize("case", sorted(hostile_tars()))
def test_hostile_apply_diff(graph, case):
    c = graph.client
    os.makedirs(OUTSIDE, exist_ok=True)
    before = sorted(os.listdir(OUTSIDE))
    passwd = open("/etc/passwd", "rb").read()
    base, lid = new_id(), new_id()
    c.create(base)
    c.create(lid, base)
    refused(c.apply_diff, lid, base, hostile_tars()[case], status=400)
    assert sorted(os.listdir(OUTSIDE)) == before, "a hostile tar wrote outside its layer"
    assert open("/etc/passwd", "rb").read() == passwd
    # The half-applied layer is gone (dockerd removes its layer after a failed ApplyDiff);
    # its parent is untouched and can go.
    assert not c.exists(lid)
    assert c.changes(base) == []
    c.remove(base)
    assert c.activate() == ["GraphDriver"]


def test_apply_diff_with_the_wrong_parent(graph):
    c = graph.client
    a, b, lid = new_id(), new_id(), new_id()
    c.create(a)
    c.create(b)
    c.create(lid, a)
    refused(c.apply_diff, lid, b, b"", status=400, says="has parent")
    refused(c.apply_diff, lid, "", b"", status=400, says="has parent")
    for x in (lid, a, b):
        c.remove(x)
