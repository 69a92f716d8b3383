"""Fixtures for the concurrency tests: many real processes (the installed `storagekit`
command) on one store, several rounds, counting failures and what is left behind."""

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
    # whatever happened, nothing of the test may stay mounted or running
    subprocess.run(["umount", "-R", "-l", str(c.root)], capture_output=True)
