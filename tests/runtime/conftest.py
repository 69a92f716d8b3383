"""Fixtures of the runtime tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from imagecraft import sk
from subids import COUNT, FIRST, LINE, write

from storagekit import idmap, registry
from storagekit.store import Store


@pytest.fixture(scope="session", autouse=True)
def subordinate_ids() -> Iterator[tuple[int, int]]:
    """A `storagekit` entry in the host's /etc/subuid and /etc/subgid for the session, as an
    administrator adds one for --userns (the files are put back as they were after)."""
    saved = {}
    for path in (idmap.SUBUID, idmap.SUBGID):
        try:
            with open(path) as f:
                saved[path] = f.read()
        except FileNotFoundError:
            saved[path] = None
        kept = [line for line in (saved[path] or "").splitlines(keepends=True)
                if not line.startswith("storagekit:")]
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        write(path, "".join(kept) + LINE)
    try:
        yield FIRST, COUNT
    finally:
        for path, text in saved.items():
            if text is None:
                os.unlink(path)
            else:
                write(path, text)


@pytest.fixture(params=sorted(registry.available()))
def store_root(request, tmp_path):
    """An empty store on every driver this host supports, made by the command line (`info`
    makes the store in an existing directory); its driver released afterwards."""
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    root = tmp_path / "root"
    root.mkdir()
    assert sk(root, "--driver", request.param, "info").returncode == 0
    yield root
    with Store(root) as store:
        store.driver.cleanup()
