"""The hostile tars of test_hostile_tars, through the store on every driver: each is applied
safely or refused with a clear error; a refused layer leaves nothing behind, nothing outside
the store root changes, and the store still opens."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

import pytest
from test_hostile_tars import CASES, REAL_PROBE, Sandbox, snapshot_outside

from storagekit import registry
from storagekit.errors import InvalidArchive
from storagekit.store import Store

DRIVERS = sorted(registry.available())
# Cases that start from a layer prepared by hand have no meaning for a fresh store layer.
# The store bounds the file data a layer declares (its max-layer-size option): a 1 TiB
# sparse file that the applier itself takes is refused there (tests/security/test_layer_limits).
STORE_ERRORS = {"huge-sparse-file": "declare more than .* max-layer-size"}
STORE_CASES = [dataclasses.replace(c, error=STORE_ERRORS.get(c.id, c.error), check=None)
               if c.id in STORE_ERRORS else c
               for c in CASES if c.prepare is None and c.dialect == "none"]


@pytest.fixture(params=DRIVERS)
def store_sandbox(request, tmp_path):
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    root = tmp_path / "sandbox"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "sentinel").write_text("do not touch\n")
    (root / "outside-dir").mkdir()
    decoy = tmp_path / "decoy"
    (decoy / "etc").mkdir(parents=True)
    store_root = root / "store"
    sb = Sandbox(tmp_path, root, store_root, decoy, tmp_path / "stream.tar")
    yield request.param, sb
    subprocess.run(["rm", "-rf", "--one-file-system", str(store_root)], check=False)


@pytest.mark.parametrize("case", STORE_CASES, ids=[c.id for c in STORE_CASES])
def test_hostile_through_store(store_sandbox, case):
    driver, sb = store_sandbox
    with Store(sb.layer, driver) as store:
        store.create("base")
    sb.stream.write_bytes(case.build(sb))
    before = snapshot_outside(sb)
    with Store(sb.layer, driver) as store, open(sb.stream, "rb") as stream:
        try:
            outcome = store.create("x", "base", diff=stream)
        except (InvalidArchive, OSError) as e:
            outcome = e
        try:
            if case.error is None:
                assert not isinstance(outcome, Exception), f"refused: {outcome}"
                assert store.exists("x")
            else:
                assert isinstance(outcome, InvalidArchive), f"not refused as invalid: {outcome!r}"
                assert re.search(case.error, str(outcome)), str(outcome)
                assert "was not created" in str(outcome)
                assert not store.exists("x")
                assert not any((sb.layer / "locks").iterdir())
        finally:
            store.driver.cleanup()
    assert snapshot_outside(sb) == before, "something outside the store changed"
    assert not os.path.lexists(REAL_PROBE)
    with Store(sb.layer) as store:  # the store still opens, and only what succeeded is there
        ids = {layer.id for layer in store.layers()}
        assert ids == ({"base", "x"} if case.error is None else {"base"})
        store.create("after", "base")
        store.driver.cleanup()  # what a driver keeps between uses (btrfs: its loopback)
