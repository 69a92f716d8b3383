"""Every thin engine test is judged by thin-provisioning-tools: skip (saying why) without them."""

from __future__ import annotations

import pytest
from thinutil import require_tools


@pytest.fixture(autouse=True)
def _thin_tools():
    require_tools()
