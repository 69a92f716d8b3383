"""The plugin's HTTP server (aiohttp) on a unix socket: each endpoint of protocol.py answered
by the GraphDriverService, in worker threads so that a long mount or apply never holds up
the other requests.

Diff streams the tar as it is written (chunked), ApplyDiff reads the request body as it comes
(dockerd sends it chunked): both go through a pipe to the Store (pipes.py), never whole in
memory. Every failure is answered ``{"Err": ...}`` with a non-200 status — except one that
happens while a Diff is already streaming: its status has gone out, so the connection is cut
before the end of the chunked body, and dockerd sees a broken stream instead of a short tar.

SIGTERM (or SIGINT) stops the server: it stops listening, lets the requests in progress end
(up to SHUTDOWN_TIMEOUT; then they are cut, and a half-applied layer is discarded by the
store), waits for the worker threads, removes its socket and closes the store. Mounts that
dockerd got and has not put back stay, with their counts in the store, so containers keep
running and a plugin started again serves them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from storagekit.errors import StorageError
from storagekit.sockets import claim_socket, release_socket

from . import pipes
from .protocol import (
    MAX_JSON_BODY,
    MEDIA_TYPE,
    BadRequest,
    decode_body,
    error_status,
    error_text,
    id_maps,
    layer_id,
    parent_id,
    string,
    string_list,
    string_map,
)
from .service import GraphDriverService

log = logging.getLogger("storagekit.dockerplugin")

#: Seconds the requests in progress get to finish when the plugin is stopped.
SHUTDOWN_TIMEOUT = 10.0
#: Worker threads: the store operations that may run at once.
WORKERS = 16
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Request = dict[str, Any]


def _error_response(status: int, text: str) -> web.Response:
    return web.json_response({"Err": text}, status=status, content_type=MEDIA_TYPE)


class PluginServer:
    """The aiohttp application that serves one GraphDriverService."""

    def __init__(self, service: GraphDriverService, workers: int = WORKERS) -> None:
        self.service = service
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graphdriver")
        self.app = web.Application(client_max_size=MAX_JSON_BODY,
                                   middlewares=[self._counted, self._errors])
        self._in_progress = 0
        self._idle: asyncio.Event | None = None  # made in the server's loop
        self.app.router.add_route("*", "/{endpoint}", self._dispatch)
        s = service
        # The JSON endpoints: request object -> response object, run in a worker thread.
        self._calls: dict[str, Callable[[Request], dict[str, Any]]] = {
            "Plugin.Activate": lambda r: {"Implements": ["GraphDriver"]},
            "GraphDriver.Init": self._init,
            "GraphDriver.Capabilities": lambda r: {"Capabilities": s.capabilities()},
            "GraphDriver.Create": functools.partial(self._create, rw=False),
            "GraphDriver.CreateReadWrite": functools.partial(self._create, rw=True),
            "GraphDriver.Remove": self._remove,
            "GraphDriver.Get": self._get,
            "GraphDriver.Put": self._put,
            "GraphDriver.Exists": lambda r: {"Exists": s.exists(layer_id(r))},
            "GraphDriver.Status": lambda r: {"Status": [list(kv) for kv in s.status()]},
            "GraphDriver.GetMetadata": lambda r: {"Metadata": s.metadata(layer_id(r))},
            "GraphDriver.Cleanup": self._cleanup,
            "GraphDriver.Changes": lambda r: {
                "Changes": s.changes(layer_id(r), parent_id(r))},
            "GraphDriver.DiffSize": lambda r: {"Size": s.diff_size(layer_id(r), parent_id(r))},
        }
        self._streams: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "GraphDriver.Diff": self._diff,
            "GraphDriver.ApplyDiff": self._apply_diff,
        }

    # ------------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _start(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """fn in a worker thread, for a stream's other end. If the stream is given up (the
        client went away), nobody awaits its outcome: it is collected here, not reported as
        an exception never retrieved."""
        job = asyncio.get_running_loop().run_in_executor(self.executor, fn)
        job.add_done_callback(lambda f: f.cancelled() or f.exception())
        return job

    @web.middleware
    async def _counted(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        """Count the requests in progress, so that a stop can let them finish; log each
        one's outcome and time (at debug level)."""
        if self._idle is None:
            self._idle = asyncio.Event()
        self._in_progress += 1
        self._idle.clear()
        start = time.monotonic()
        status = "cut"
        try:
            response = await handler(request)
            status = str(response.status)
            return response
        finally:
            self._in_progress -= 1
            if not self._in_progress:
                self._idle.set()
            log.debug("%s: %s in %.1f ms", _what(request), status,
                      (time.monotonic() - start) * 1000)

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in progress (at most timeout seconds): whether it came."""
        if self._idle is None or not self._in_progress:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Every failure becomes {"Err": ...} with its status (see protocol.py)."""
        try:
            return await handler(request)
        except web.HTTPException as e:  # routing, body size: aiohttp's own refusals
            text = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
            if e.status == 413:
                text = f"the request body is larger than {MAX_JSON_BODY} bytes"
            return _error_response(e.status, text)
        except (StorageError, OSError) as e:
            text = error_text(e)
            log.warning("%s: %s", _what(request), text)
            return _error_response(error_status(e), text)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: still one line for dockerd, the traceback in our log
            log.exception("%s: internal error", _what(request))
            return _error_response(500, f"internal error: {type(e).__name__}: {error_text(e)}")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        stream = self._streams.get(endpoint)
        call = self._calls.get(endpoint)
        if stream is None and call is None:
            raise NoSuchEndpoint(endpoint)
        if request.method != "POST":
            return _error_response(405, f"/{endpoint} takes POST, not {request.method}")
        if stream is not None:
            return await stream(request)
        assert call is not None
        body = decode_body(await request.read())
        request["layer"] = body.get("ID")
        result = await self._run(call, body)
        return web.json_response(result, content_type=MEDIA_TYPE)

    # ------------------------------------------------------------------ JSON endpoints

    def _init(self, r: Request) -> dict[str, Any]:
        self.service.init(string(r, "Home"), string_list(r, "Opts"), id_maps(r, "UIDMaps"),
                          id_maps(r, "GIDMaps"))
        log.info("initialised by dockerd (home %s, options %s)", string(r, "Home") or "-",
                 " ".join(string_list(r, "Opts")) or "none")
        return {}

    def _create(self, r: Request, rw: bool) -> dict[str, Any]:
        string(r, "MountLabel")  # SELinux labels: checked for type, not applied (no SELinux)
        self.service.create(layer_id(r), parent_id(r), string_map(r, "StorageOpt"), rw)
        return {}

    def _remove(self, r: Request) -> dict[str, Any]:
        self.service.remove(layer_id(r))
        return {}

    def _get(self, r: Request) -> dict[str, Any]:
        string(r, "MountLabel")
        return {"Dir": self.service.get(layer_id(r))}

    def _put(self, r: Request) -> dict[str, Any]:
        self.service.put(layer_id(r))
        return {}

    def _cleanup(self, r: Request) -> dict[str, Any]:
        self.service.cleanup()
        return {}

    # ------------------------------------------------------------------ streams

    async def _diff(self, request: web.Request) -> web.StreamResponse:
        body = decode_body(await request.read())
        lid, parent = layer_id(body), parent_id(body)
        request["layer"] = lid
        await self._run(self.service.check_layer, lid, parent)
        r, w = pipes.pipe()
        os.set_blocking(r, False)

        def produce() -> None:
            try:
                self.service.export(lid, parent, w)
            finally:
                pipes.close(w)

        job = self._start(produce)
        try:
            chunk = await pipes.read_chunk(r)
            if not chunk:  # not one byte: it failed first, and can still say so
                await job
                raise StorageError("the layer's export ended without a tar")
            response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            await response.prepare(request)
            try:
                while chunk:
                    await response.write(chunk)
                    chunk = await pipes.read_chunk(r)
                await job
            except ConnectionError:  # dockerd went away: nobody to tell
                log.warning("%s: the client closed the stream", _what(request))
                return response
            except Exception as e:
                # The status went out with the first chunk: cut the connection, so that
                # dockerd sees a broken stream rather than a tar that ends early.
                log.warning("%s: %s (the stream was cut)", _what(request), error_text(e))
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            return response
        finally:
            pipes.close(r)  # a producer still writing gets EPIPE and stops

    async def _apply_diff(self, request: web.Request) -> web.StreamResponse:
        lid = request.query.get("id", "")
        parent = request.query.get("parent", "") or None
        request["layer"] = lid
        if not lid:
            raise BadRequest("ApplyDiff needs the layer in its query: ?id=ID&parent=PARENT")
        before = await self._run(self.service.check_apply, lid, parent)
        r, w = pipes.pipe()
        os.set_blocking(w, False)

        def consume() -> int:
            try:
                return self.service.apply(lid, r)
            finally:
                pipes.close(r)

        job = self._start(consume)
        try:
            reading = True
            async for chunk in request.content.iter_any():
                if not reading:
                    continue  # the tar ended (or failed) early: read the rest of the body
                try:
                    await pipes.write_all(w, chunk)
                except BrokenPipeError:
                    reading = False
                    pipes.close(w)
                    w = None
            pipes.close(w)
            w = None  # end of file for the apply
            after = await job
        finally:
            pipes.close(w)
        return web.json_response({"Size": after - before}, content_type=MEDIA_TYPE)


class NoSuchEndpoint(web.HTTPNotFound):
    def __init__(self, endpoint: str) -> None:
        super().__init__(text=f"this plugin has no endpoint /{endpoint}")


def _what(request: web.Request) -> str:
    layer = request.get("layer")
    return request.path.lstrip("/") + (f" {layer}" if isinstance(layer, str) and layer else "")


async def _serve(server: PluginServer, path: str, name: str) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    inode = None
    try:
        claim_socket(path)
        site = web.UnixSite(runner, path)
        await site.start()
        os.chmod(path, 0o660)
        inode = os.lstat(path).st_ino
        log.info("serving %s on %s (driver %s, store %s)", name, path,
                 server.service.driver_name, server.service.root)
        await stopping.wait()
        # Stop listening, then let the requests in progress finish (dockerd may be sending
        # a layer): aiohttp's own shutdown stops reading request bodies at once.
        await site.stop()
        log.info("stopping")
        if not await server.drained(SHUTDOWN_TIMEOUT):
            log.warning("requests still in progress after %s s: cut", SHUTDOWN_TIMEOUT)
    finally:
        await runner.cleanup()
        if inode is not None:
            release_socket(path, inode)
        # No store operation outlives the server.
        await asyncio.to_thread(server.executor.shutdown, wait=True)
        # A second signal while stopping changes nothing: the worker threads were waited
        # for above with the loop's handlers in place, and from here until the process ends
        # (closing the store, the interpreter's exit) the signals are ignored.
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


def serve(service: GraphDriverService, path: str, name: str) -> None:
    """Serve the plugin on the unix socket at path until SIGTERM or SIGINT. The process's
    main: when it returns, SIGTERM and SIGINT are ignored (the process is ending)."""
    server = PluginServer(service)
    try:
        asyncio.run(_serve(server, path, name))
    finally:
        server.executor.shutdown(wait=True)  # (done already, unless the loop failed)
