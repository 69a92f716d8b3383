"""The conformance suite runs against every registered driver, unchanged, on the temporary
directory's filesystem and on a fresh xfs (reflink=1) loop filesystem.

A driver that this host cannot run is skipped with the reason its probe gives.
"""

from __future__ import annotations

import pytest
from loopfs import loop_filesystem

from storagekit import registry

DRIVERS = sorted(registry.available())


@pytest.fixture(params=["tmp", "xfs"])
def backing(request, tmp_path):
    if request.param == "tmp":
        yield tmp_path
    else:
        with loop_filesystem("xfs") as mnt:
            yield mnt


@pytest.fixture(params=DRIVERS)
def driver(request, backing):
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(backing)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    d = cls(backing / request.param)
    yield d
    d.cleanup()
