"""serve's HTTP layer on aiohttp.web (a maintained server), with one `handle(request) -> Response` hook.

aiohttp runs in its own event-loop thread; `handle` runs in a small thread pool (it writes the spool
with fsync, which must not stall the loop), so the rest of serve stays plain threads. What serve
needs from it: short JSON answers over HTTP/1.1 keep-alive, optional TLS, a body-size limit checked
before the body is read (413, connection closed), and a `stop()` that closes the listener *and*
open keep-alive connections within a bound, so a stopped server refuses even pooled clients.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

IDLE_KEEPALIVE_S = 60.0  # an idle keep-alive connection is closed after this
START_TIMEOUT_S = 10.0
HANDLER_THREADS = 8


@dataclass
class Request:
    """What a handler needs from one HTTP request (body already read, within the limit)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    client: str


@dataclass
class Response:
    """A complete answer, sent with Content-Length on a kept-alive connection."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        """A compact JSON answer: every serve route answers JSON except /metrics."""
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), "application/json",
                   dict(headers or {}))


class HttpServer:
    """Bind, serve from an aiohttp loop thread, stop within a bound; subclasses implement `handle`."""

    max_body_bytes = 1024 * 1024  # a larger body is refused with `too_large()`, unread

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self._port = port
        self.ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> Self:
        """Bind (port 0 = any free port) and serve; OSError when the address cannot be bound. No-op if running."""
        if self._runner is not None:
            return self
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=f"{type(self).__name__}-http", daemon=True)
        self._thread.start()
        self._loop = loop
        self._pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix=f"{type(self).__name__}-handler")
        try:
            self._runner, self._port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(START_TIMEOUT_S)
        except BaseException:
            self._halt_loop()
            raise
        return self

    async def _serve(self) -> tuple[Any, int]:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_KEEPALIVE_S, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self.ssl_context, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = getattr(site, "_server", None)
        port = server.sockets[0].getsockname()[1] if server and server.sockets else self._port
        return runner, port

    async def _read_body(self, request: Any) -> bytes | None:
        """The request body, or None when it is over `max_body_bytes` (the rest is left unread)."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        out = bytearray()
        while chunk := await request.content.read(65536):
            out += chunk
            if len(out) > limit:
                return None
        return bytes(out)

    async def _dispatch(self, request: Any) -> Any:
        from aiohttp import web

        body = await self._read_body(request)
        if body is None:  # answer, then close: the unread rest of the body must not be parsed as a request
            answer = self.too_large()
            close = True
        else:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            req = Request(request.method, request.path or "/", request.headers, body, str(peer[0]) if peer else "")
            try:
                answer = await asyncio.get_running_loop().run_in_executor(self._pool, self.handle, req)
            except Exception as exc:  # noqa: BLE001 - a handler bug answers 500 instead of a dropped connection
                answer = self.handler_failed(req, exc)
            close = False
        response = web.Response(status=answer.status, body=answer.body,
                                headers={"Content-Type": answer.content_type, "Server": "runbook-serve",
                                         **answer.headers})
        if close:
            response.force_close()
        return response

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting and drop open connections (pooled keep-alive ones too); bounded."""
        runner, loop = self._runner, self._loop
        if runner is None or loop is None:
            return
        self._runner = None
        try:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout_s + 3.0)
        except Exception:  # noqa: BLE001 - a slow cleanup must not hang the stop; the loop is stopped below
            pass
        self._halt_loop(timeout_s)

    def _halt_loop(self, timeout_s: float = 2.0) -> None:
        loop, thread, pool = self._loop, self._thread, self._pool
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout_s)
        if loop is not None and not loop.is_running():
            loop.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = self._pool = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The real port (after `start()` when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9095 or https://... with TLS (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self._port}"

    def too_large(self) -> Response:
        """The answer to a body over `max_body_bytes` (the connection is closed after it)."""
        return Response.json(413, {"error": f"payload over {self.max_body_bytes} bytes"})

    def handle(self, request: Request) -> Response:
        """Answer one request (runs in a handler thread)."""
        raise NotImplementedError

    def handler_failed(self, request: Request, exc: Exception) -> Response:
        """The answer when `handle` raised (a bug): subclasses log and count it; never a silent 500."""
        return Response.json(500, {"error": f"internal error ({type(exc).__name__})"})
