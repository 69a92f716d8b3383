"""Fixtures of the snapshotter tests: the server as a real process on a store of its own,
for every driver this host supports, and a namespace of its own for each test."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hostutil import force_cleanup, remove_stale_socket
from serverutil import Server
from snapclient import SnapClient

from storagekit import registry

DRIVERS = sorted(registry.available())


def _release_pool(server: Server) -> None:
    """devicemapper: what `Cleanup` does not stop (the thin pool's engine and loop devices),
    stopped as an administrator would: `storagekit thin` is not ours; the store's cleanup
    through the driver is."""
    if server.driver != "devicemapper":
        return
    code = ("from storagekit.store import Store\n"
            f"s = Store({str(server.store)!r}, 'devicemapper')\n"
            "s.driver.cleanup()\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def stop_and_check(server: Server) -> list[str]:
    left: list[str] = []
    try:
        if server.proc is not None:
            assert server.stop() == 0, f"the server did not exit cleanly:\n{server.tail()}"
        _release_pool(server)
        left = server.leftovers()
    finally:
        if server.leftovers():
            force_cleanup(server.home)
            remove_stale_socket(server.socket)
    return left


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
