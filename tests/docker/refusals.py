"""Checks that the plugin refused a request the way the protocol says: a non-200 status and
{"Err": one line}."""

from __future__ import annotations

import json

import pytest
from graphclient import PluginError


def refused(fn, *args, status: int | None = None, says: str = "", **kw) -> PluginError:
    with pytest.raises(PluginError) as e:
        fn(*args, **kw)
    err = e.value
    assert err.err and "\n" not in err.err, err
    if status is not None:
        assert err.status == status, err
    assert says in err.err, err
    return err


def raw_err(graph, path: str, body: bytes, *, method: str = "POST") -> tuple[int, str]:
    status, headers, data = graph.client.raw(path, body, method=method)
    assert status != 200
    answer = json.loads(data)  # JSON even for what aiohttp itself refuses
    assert set(answer) == {"Err"} and answer["Err"] and "\n" not in answer["Err"], answer
    return status, answer["Err"]
