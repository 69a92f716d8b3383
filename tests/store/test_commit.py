"""Store.commit: an active layer becomes committed in place, in O(1), on every driver."""

from __future__ import annotations

import errno
import io
import os
import time

import pytest
from treeutil import describe, make_tar

from storagekit import registry
from storagekit.errors import InvalidArgument, LayerExists, LayerInUse
from storagekit.store import Store

BASE = make_tar([{"name": "etc", "type": "dir"}, {"name": "etc/hostname", "data": b"base\n"}])


@pytest.fixture(params=sorted(registry.available()))
def store(request, tmp_path):
    ok, reason = registry.driver_class(request.param).probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    s = Store(tmp_path / "root", request.param)
    yield s
    s.driver.cleanup()
    s.close()


def test_commit_keeps_the_content_and_makes_it_read_only(store):
    store.create("base", diff=io.BytesIO(BASE))
    store.create("work", "base", kind="active", name="extract-1", labels={"a": "1"})
    path = store.get("work")
    with open(os.path.join(path, "added"), "w") as f:
        f.write("content")
    before = describe(path)
    with pytest.raises(LayerInUse):
        store.commit("work", name="done")  # mounted: refused, and nothing changed
    assert store.layer("work").kind == "active" and store.layer("work").name == "extract-1"
    store.put("work")
    created = store.layer("work").created
    time.sleep(0.01)
    layer = store.commit("work", name="done", labels={"b": "2"})
    assert (layer.kind, layer.name, layer.labels) == ("committed", "done", {"b": "2"})
    assert layer.created == created and layer.updated > created
    assert layer.diff_id is None  # not one tar's content
    assert store.resolve("done") == "work"
    path = store.get("work")
    try:
        assert describe(path) == before
        with pytest.raises(OSError) as e:
            open(os.path.join(path, "more"), "w").close()
        assert e.value.errno == errno.EROFS
    finally:
        store.put("work")
    child = store.create("next", "work", kind="active")
    assert child.parent == "work"


def test_commit_refusals(store):
    store.create("base", diff=io.BytesIO(BASE), name="taken")
    store.create("v", "base", kind="view")
    store.create("a", "base", kind="active")
    with pytest.raises(InvalidArgument, match="only an active layer"):
        store.commit("base")
    with pytest.raises(InvalidArgument, match="only an active layer"):
        store.commit("v")
    with pytest.raises(LayerExists):
        store.commit("a", name="taken")
    assert store.layer("a").kind == "active"


def test_a_view_and_an_image_layer_mount_read_only(store):
    store.create("base", diff=io.BytesIO(BASE))
    store.create("v", "base", kind="view")
    for layer in ("base", "v"):
        path = store.get(layer)
        try:
            assert open(os.path.join(path, "etc/hostname")).read() == "base\n"
            with pytest.raises(OSError) as e:
                open(os.path.join(path, "etc/hostname"), "w").close()
            assert e.value.errno == errno.EROFS
        finally:
            store.put(layer)
