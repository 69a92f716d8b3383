"""Fixtures for the union engine tests (helpers in unionutil.py). Every mount is undone and
every engine daemon gone after each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from unionutil import BOTTOM, TOP, Stacks, daemons_under


@pytest.fixture(params=[True, False], ids=["passthrough", "daemon-io"])
def stacks(request, tmp_path: Path) -> Iterator[Stacks]:
    """The standard two layers; the union does its file I/O through FUSE passthrough, or
    through the daemon (what it falls back to when the kernel refuses passthrough)."""
    s = Stacks(tmp_path, [BOTTOM, TOP], passthrough=request.param)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_stacks(tmp_path: Path) -> Iterator[Callable[[list[list[dict]]], Stacks]]:
    made: list[Stacks] = []

    def make(layers: list[list[dict]]) -> Stacks:
        d = tmp_path / f"s{len(made)}"
        d.mkdir()
        s = Stacks(d, layers)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()


@pytest.fixture(autouse=True)
def no_daemon_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = daemons_under(tmp_path)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"union daemons left running: {sorted(left)}"
