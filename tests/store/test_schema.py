"""The store's schema versions: numbered migrations at open, a newer schema refused in one line,
a store made before versions (and before read-only records) brought up to date."""

from __future__ import annotations

import errno
import io
import os
import sqlite3

import pytest
from treeutil import make_tar

from storagekit import schema
from storagekit.errors import StoreError
from storagekit.store import SCHEMA, Store

BASE = make_tar([{"name": "etc", "type": "dir"}, {"name": "etc/hostname", "data": b"base\n"}])


def versions(root) -> dict[str, int]:
    with sqlite3.connect(root / "store.db") as db:
        return dict(db.execute("SELECT component, version FROM schema_versions"))


def test_a_new_store_records_every_components_version(tmp_path):
    from storagekit.image import SCHEMA as IMAGES
    from storagekit.image import Images
    from storagekit.runtime import SCHEMA as CONTAINERS
    from storagekit.runtime import Containers

    root = tmp_path / "root"
    with Store(root, "vfs") as s:
        Images(s)
        Containers(s)
    assert versions(root) == {"store": SCHEMA.version, "images": IMAGES.version,
                              "containers": CONTAINERS.version}


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    root = tmp_path / "root"
    Store(root, "vfs").close()
    with sqlite3.connect(root / "store.db") as db:
        db.execute("UPDATE schema_versions SET version = 99 WHERE component = 'store'")
    with pytest.raises(StoreError) as e:
        Store(root)
    assert "newer than this storagekit knows" in str(e.value) and "\n" not in str(e.value)


def test_migrations_run_once_and_in_order(tmp_path):
    root = tmp_path / "root"
    ran = []
    component = schema.Schema("probe", {"probe"}, [
        "CREATE TABLE IF NOT EXISTS probe (a TEXT)",
        lambda db: ran.append(2),
        schema.add_column("probe", "b", "INTEGER"),
    ])
    with Store(root, "vfs") as s:
        s.ensure_schema(component)
        assert ran == [2]
        columns = [r[1] for r in s.db.execute("PRAGMA table_info(probe)")]
        assert columns == ["a", "b"]
    with Store(root) as s:
        s.ensure_schema(component)  # up to date: nothing runs again
        assert ran == [2]
    assert versions(root)["probe"] == 3


def make_version_1_store(root) -> None:
    """A store as the release before schema versions and read-only records left it."""
    with Store(root, "overlay") as s:
        s.create("base", diff=io.BytesIO(BASE))
        s.create("ctr", "base", kind="active")
    with sqlite3.connect(root / "store.db") as db:
        db.execute("DROP TABLE schema_versions")
        db.execute("ALTER TABLE layers DROP COLUMN updated")
        db.execute("DELETE FROM meta WHERE key = 'readonly_layers_marked'")
    os.unlink(root / "overlay/layers/base/committed")  # image layers were writable then


def test_a_store_from_before_versions_is_migrated(tmp_path):
    root = tmp_path / "root"
    make_version_1_store(root)
    with Store(root) as s:
        assert versions(root)["store"] == SCHEMA.version
        base = s.layer("base")
        assert base.updated == base.created  # no change recorded since it was made
        # its committed layers are read-only now, like every layer made since
        assert s.driver.is_readonly("base") and not s.driver.is_readonly("ctr")
        path = s.get("base")
        try:
            with pytest.raises(OSError) as e:
                open(os.path.join(path, "x"), "w").close()
            assert e.value.errno == errno.EROFS
        finally:
            s.put("base")
