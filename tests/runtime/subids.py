"""The subordinate ids the runtime tests give --userns containers, and how they are written
into the host's /etc/subuid and /etc/subgid."""

from __future__ import annotations

import os

FIRST, COUNT = 1_300_000_000, 65536
LINE = f"storagekit:{FIRST}:{COUNT}\n"


def write(path: str, text: str) -> None:
    """Replace path's content atomically (readers never see a half-written file)."""
    tmp = f"{path}.sk-test"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
