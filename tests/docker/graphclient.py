"""A client of the graphdriver plugin protocol, written from the protocol (not from the
plugin's code): what dockerd's daemon/graphdriver/proxy.go sends, over a unix socket."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

ACCEPT = "application/vnd.docker.plugins.v1.2+json"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 600) -> None:
        super().__init__("plugin", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.socket_path)
        self.sock = s


class PluginError(Exception):
    def __init__(self, status: int, err: str) -> None:
        super().__init__(f"{status}: {err}")
        self.status, self.err = status, err


class GraphClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    # ------------------------------------------------------------------ raw

    def raw(self, path: str, body: bytes | Iterable[bytes] | None = None, *,
            method: str = "POST", chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
        conn = UnixConnection(self.socket_path)
        try:
            conn.request(method, path, body=body, headers={"Accept": ACCEPT},
                         encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def call(self, method: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /<method> with a JSON body; the decoded answer, or PluginError."""
        body = b"" if request is None else json.dumps(request).encode()
        status, _, data = self.raw(f"/{method}", body)
        answer = json.loads(data) if data else {}
        if status != 200:
            raise PluginError(status, answer.get("Err", data.decode(errors="replace")))
        assert not answer.get("Err"), answer
        return answer

    # ------------------------------------------------------------------ graphdriver

    def activate(self) -> list[str]:
        return self.call("Plugin.Activate")["Implements"]

    def init(self, home: str = "/var/lib/docker/test", opts: list[str] | None = None,
             uid_maps: list[dict[str, int]] | None = None,
             gid_maps: list[dict[str, int]] | None = None) -> None:
        self.call("GraphDriver.Init", {"Home": home, "Opts": opts or [],
                                       "UIDMaps": uid_maps, "GIDMaps": gid_maps})

    def capabilities(self) -> dict[str, Any]:
        return self.call("GraphDriver.Capabilities", {})["Capabilities"]

    def create(self, lid: str, parent: str = "", *, rw: bool = False,
               storage_opt: dict[str, str] | None = None) -> None:
        req: dict[str, Any] = {"ID": lid}
        if parent:
            req["Parent"] = parent
        if storage_opt:
            req["StorageOpt"] = storage_opt
        self.call("GraphDriver.CreateReadWrite" if rw else "GraphDriver.Create", req)

    def remove(self, lid: str) -> None:
        self.call("GraphDriver.Remove", {"ID": lid})

    def get(self, lid: str) -> str:
        return self.call("GraphDriver.Get", {"ID": lid})["Dir"]

    def put(self, lid: str) -> None:
        self.call("GraphDriver.Put", {"ID": lid})

    def exists(self, lid: str) -> bool:
        return self.call("GraphDriver.Exists", {"ID": lid}).get("Exists", False)

    def status(self) -> list[list[str]]:
        return self.call("GraphDriver.Status", {})["Status"]

    def metadata(self, lid: str) -> dict[str, str]:
        return self.call("GraphDriver.GetMetadata", {"ID": lid})["Metadata"]

    def cleanup(self) -> None:
        self.call("GraphDriver.Cleanup", {})

    def changes(self, lid: str, parent: str = "") -> list[tuple[str, int]]:
        req = {"ID": lid, "Parent": parent} if parent else {"ID": lid}
        return [(c["Path"], c["Kind"])
                for c in self.call("GraphDriver.Changes", req).get("Changes") or []]

    def diff_size(self, lid: str, parent: str = "") -> int:
        req = {"ID": lid, "Parent": parent} if parent else {"ID": lid}
        return self.call("GraphDriver.DiffSize", req).get("Size", 0)

    def diff(self, lid: str, parent: str = "") -> bytes:
        return b"".join(self.diff_stream(lid, parent))

    def diff_stream(self, lid: str, parent: str = "") -> Iterator[bytes]:
        """The Diff body as it arrives (dockerd's client.Stream)."""
        conn = UnixConnection(self.socket_path)
        try:
            req = {"ID": lid, "Parent": parent} if parent else {"ID": lid}
            conn.request("POST", "/GraphDriver.Diff", body=json.dumps(req).encode(),
                         headers={"Accept": ACCEPT})
            resp = conn.getresponse()
            if resp.status != 200:
                data = resp.read()
                raise PluginError(resp.status, json.loads(data).get("Err", ""))
            while chunk := resp.read1(1 << 20):
                yield chunk
        finally:
            conn.close()

    def apply_diff(self, lid: str, parent: str, tar: bytes | Iterable[bytes]) -> int:
        """ApplyDiff as dockerd sends it: ids in the query, the tar as a chunked body."""
        query = urllib.parse.urlencode({"id": lid, "parent": parent})
        body = [tar] if isinstance(tar, bytes) else tar
        status, _, data = self.raw(f"/GraphDriver.ApplyDiff?{query}", body, chunked=True)
        answer = json.loads(data) if data else {}
        if status != 200:
            raise PluginError(status, answer.get("Err", data.decode(errors="replace")))
        return answer.get("Size", 0)
