"""Fixtures of the runtime tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from subids import COUNT, FIRST, LINE, write

from storagekit import idmap


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
