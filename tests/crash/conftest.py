"""Fixtures for the kill -9 tests: a store on every driver, driven through the installed
command, its commands killed at random moments."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from crowdutil import Crowd

from storagekit import registry

DRIVERS = sorted(registry.available())


@pytest.fixture(params=DRIVERS)
def crowd(request, tmp_path) -> Iterator[Crowd]:
    ok, reason = registry.driver_class(request.param).probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    c = Crowd(tmp_path / "root", request.param)
    yield c
    subprocess.run([*c.argv("prune")], capture_output=True)
    pool = c.root / "devicemapper" / "pool"
    if pool.exists():
        subprocess.run([*c.argv("thin", "stop", str(pool))], capture_output=True)
    subprocess.run(["umount", "-R", "-l", str(c.root)], capture_output=True)
