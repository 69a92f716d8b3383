"""Fixtures of the snapshotter tests: the server as a real process on a store of its own,
for every driver this host supports, and a namespace of its own for each test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from serverutil import Server, stop_and_check
from snapclient import SnapClient

from storagekit import registry
from storagekit.snapshotter.command import SERVED_DRIVERS

# the drivers the snapshotter serves (btrfs not yet: see its SERVED_DRIVERS)
DRIVERS = sorted(set(registry.available()) & set(SERVED_DRIVERS))


@pytest.fixture(scope="module", params=DRIVERS)
def server(request, tmp_path_factory) -> Iterator[Server]:
    """The server on storagekit-<driver>, for every driver; shared by a module's tests."""
    srv = Server(request.param, tmp_path_factory.mktemp(f"snap-{request.param}"))
    try:
        srv.start()
        yield srv
    finally:
        left = stop_and_check(srv)
        assert not left, f"left behind: {left}"


@pytest.fixture
def client(server: Server) -> Iterator[SnapClient]:
    """A client in a namespace of the test's own; what the test left there is removed
    (children first) and the namespace must then be empty."""
    server.start() if server.proc is None else None
    c = server.client(f"t{secrets.token_hex(4)}")
    yield c
    if server.proc is None:
        server.start()
    c = server.client(c.namespace)
    infos = c.list()
    children = {i.parent for i in infos}
    while infos:
        leaves = [i for i in infos if i.name not in children]
        for i in leaves:
            c.remove(i.name)
        infos = c.list()
        children = {i.parent for i in infos}
    c.close()
