"""The conformance suite runs against every registered driver, unchanged.

A driver that this host cannot run is skipped with the reason its probe gives.
"""

from __future__ import annotations

import pytest

from storagekit import registry

DRIVERS = sorted(registry.available())


@pytest.fixture(params=DRIVERS)
def driver(request, tmp_path):
    cls = registry.driver_class(request.param)
    ok, reason = cls.probe(tmp_path)
    if not ok:
        pytest.skip(f"{request.param}: {reason}")
    d = cls(tmp_path / request.param)
    yield d
    d.cleanup()
