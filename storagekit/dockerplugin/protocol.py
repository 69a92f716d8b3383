"""The wire format of Docker's graphdriver plugins (the legacy v1 plugin protocol), as dockerd
20.10 speaks it. This is a compatibility contract: dockerd's client
(daemon/graphdriver/proxy.go) is fixed, so nothing here changes shape.

Transport: HTTP/1.1 on a unix socket; every request is a ``POST /<Service>.<Method>`` with a
JSON body (empty for ``/Plugin.Activate``). A success is status 200 and a JSON object; a
failure is a non-200 status and ``{"Err": "<one line>"}``, which dockerd shows as
``GraphDriver.<Method>: <one line>``.

=============================  ====================================  ==========================
endpoint                       request                               response (200)
=============================  ====================================  ==========================
/Plugin.Activate               (empty)                               {"Implements":
                                                                     ["GraphDriver"]}
/GraphDriver.Init              {"Home", "Opts": ["k=v"...],          {}
                               "UIDMaps", "GIDMaps"}
/GraphDriver.Capabilities      {}                                    {"Capabilities":
                                                                     {"ReproducesExactDiffs"}}
/GraphDriver.Create            {"ID", "Parent", "MountLabel",        {}
                               "StorageOpt": {}}
/GraphDriver.CreateReadWrite   as Create                             {}
/GraphDriver.Remove            {"ID"}                                {}
/GraphDriver.Get               {"ID", "MountLabel"}                  {"Dir": "/abs/path"}
/GraphDriver.Put               {"ID"}                                {}
/GraphDriver.Exists            {"ID"}                                {"Exists": bool}
/GraphDriver.Status            {}                                    {"Status": [[k, v]...]}
/GraphDriver.GetMetadata       {"ID"}                                {"Metadata": {k: v}}
/GraphDriver.Cleanup           {}                                    {}
/GraphDriver.Diff              {"ID", "Parent"}                      the tar stream itself
/GraphDriver.Changes           {"ID", "Parent"}                      {"Changes": [{"Path",
                                                                     "Kind"}...]}
/GraphDriver.ApplyDiff         ?id=ID&parent=PARENT, the tar         {"Size": n}
                               stream as the body (chunked)
/GraphDriver.DiffSize          {"ID", "Parent"}                      {"Size": n}
=============================  ====================================  ==========================

Every field may be missing (dockerd marshals them with ``omitempty``); a missing string is
"", and "" as a Parent means "no parent" (for Diff, Changes and DiffSize: the whole layer).
Change kinds are Docker's archive.ChangeType: 0 modified, 1 added, 2 deleted. UID/GID map
entries are ``{"container_id", "host_id", "size"}`` (the Go type's JSON tags; the old
documentation's ``ContainerID``/``HostID``/``Size`` are accepted too).

Status codes of failures: 400 a request that cannot be accepted (not JSON, wrong types, a
bad id, a corrupt or hostile tar), 404 an unknown layer or endpoint, 405 a method other than
POST, 409 a conflict (the layer exists, is in use, is not mounted), 413 a JSON body over the
limit, 500 anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storagekit.errors import (
    InvalidArchive,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerNotMounted,
)

#: The media type dockerd asks for (``Accept``) and plugins answer with.
MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"
#: What a JSON request body may weigh: requests are ids and a few options.
MAX_JSON_BODY = 1 << 20


class BadRequest(InvalidArgument):
    """A request that does not follow the protocol (not JSON, a field of the wrong type)."""


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object a request carries; an empty body and ``null`` are an empty request."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the request body is not JSON: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(value).__name__}")
    return value


def string(request: Mapping[str, Any], field: str) -> str:
    """A string field ("" when it is missing or null)."""
    value = request.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, not {type(value).__name__}")
    return value


def layer_id(request: Mapping[str, Any], field: str = "ID") -> str:
    """A field that names a layer and must be there."""
    value = string(request, field)
    if not value:
        raise BadRequest(f"the request has no {field}")
    return value


def parent_id(request: Mapping[str, Any], field: str = "Parent") -> str | None:
    """A parent field: None for "" (no parent)."""
    return string(request, field) or None


def string_map(request: Mapping[str, Any], field: str) -> dict[str, str]:
    value = request.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"{field} must be an object of strings")
    return dict(value)


def string_list(request: Mapping[str, Any], field: str) -> list[str]:
    value = request.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{field} must be a list of strings")
    return list(value)


class IdMap:
    """One UID or GID map entry: container ids [container, container+size) are host ids
    [host, host+size)."""

    __slots__ = ("container", "host", "size")

    def __init__(self, container: int, host: int, size: int) -> None:
        self.container, self.host, self.size = container, host, size

    @property
    def identity(self) -> bool:
        return self.container == self.host

    def __repr__(self) -> str:
        return f"{self.container}:{self.host}:{self.size}"


_MAP_KEYS = (("container_id", "host_id", "size"), ("ContainerID", "HostID", "Size"))


def id_maps(request: Mapping[str, Any], field: str) -> list[IdMap]:
    value = request.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{field} must be a list of id maps")
    out = []
    for entry in value:
        if not isinstance(entry, dict):
            raise BadRequest(f"{field} entries must be objects")
        for keys in _MAP_KEYS:
            if keys[0] in entry:
                numbers = [entry.get(k) for k in keys]
                break
        else:
            raise BadRequest(f"{field} entries need container_id, host_id and size")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise BadRequest(f"{field} ids and sizes must be non-negative integers")
        out.append(IdMap(*numbers))
    return out


def error_status(error: BaseException) -> int:
    """The HTTP status a failure is answered with (see the module docstring)."""
    if isinstance(error, LayerNotFound):
        return 404
    if isinstance(error, LayerExists | LayerInUse | LayerNotMounted):
        return 409
    if isinstance(error, InvalidArgument | InvalidArchive):
        return 400
    return 500


def error_text(error: BaseException) -> str:
    """The one line a failure reads as."""
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        if error.filename is not None:
            text += f": {error.filename}"
        return text
    text = str(error) or type(error).__name__
    return " ".join(text.split())  # one line, whatever the message held
