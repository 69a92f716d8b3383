"""The `storagekit` command as installed: what users run."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path


def command() -> str:
    """The storagekit command in this interpreter's scripts directory (storagekit/launcher.py,
    written there by the install). A missing command fails the test: it is what users run."""
    path = Path(sysconfig.get_path("scripts")) / "storagekit"
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: install storagekit (pip install -e .)")
    return str(path)
