"""serve's HTTP layer on aiohttp.web (a maintained server), with one `handle(request) -> Response` hook.

aiohttp runs in its own event-loop thread; `handle` runs in a small thread pool (it writes the spool
with fsync, which must not stall the loop), so the rest of serve stays plain threads. What serve
needs from it: short JSON answers over HTTP/1.1 keep-alive, optional TLS, a body-size limit checked
before the body is read (413, connection closed), and a `stop()` that closes the listener *and*
open keep-alive connections within a bound, so a stopped server refuses even pooled clients.

Slow and hostile clients cost a socket, never a thread, and not for long: at most `max_connections`
at once (more are answered 503 and closed), a new connection's first request line and headers must
arrive within `header_timeout_s` (later ones within the keep-alive idle time, counted from the last
answer), and a body within `body_timeout_s` of its headers (408): deadlines, not idle timers, so a byte
now and then does not extend them. `precheck` sees the headers before any of the body is read (serve
answers 401 there, then closes the connection with the body unread).
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

IDLE_KEEPALIVE_S = 30.0  # an idle keep-alive connection is closed this long after its last answer
HEADER_TIMEOUT_S = 10.0  # a new connection's first request (line + headers) must arrive within this
BODY_TIMEOUT_S = 30.0  # a request's whole body must arrive within this of its headers
MAX_CONNECTIONS = 64
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
    max_connections = MAX_CONNECTIONS
    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self._port = port
        self.ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._deadlines: dict[Any, asyncio.TimerHandle] = {}  # connection -> its first request's header deadline

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

        server = _CappedServer(self._dispatch, owner=self, keepalive_timeout=IDLE_KEEPALIVE_S)
        self._deadlines = server.deadlines
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self.ssl_context, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        listener = getattr(site, "_server", None)
        port = listener.sockets[0].getsockname()[1] if listener and listener.sockets else self._port
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

        self._started_request(request.protocol)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client = str(peer[0]) if peer else ""
        close = True  # whenever the body is left unread: its rest must not be parsed as a request
        answer = self.precheck(request.method, request.path or "/", request.headers, client)
        if answer is None:
            try:
                body = await asyncio.wait_for(self._read_body(request), self.body_timeout_s)
            except TimeoutError:
                body, answer = None, self.too_slow()
            if answer is None and body is None:
                answer = self.too_large()
            elif answer is None:
                req = Request(request.method, request.path or "/", request.headers, body or b"", client)
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

    def _started_request(self, protocol: Any) -> None:
        """A connection's first request arrived: its header deadline no longer applies."""
        deadline = self._deadlines.pop(protocol, None)
        if deadline is not None:
            deadline.cancel()

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

    def precheck(self, method: str, path: str, headers: Mapping[str, str], client: str) -> Response | None:
        """An answer from the request line and headers alone (the body then stays unread), or None."""
        return None

    def too_slow(self) -> Response:
        """The answer to a body that did not arrive within `body_timeout_s` (the connection is closed)."""
        return Response.json(408, {"error": f"request body not received within {self.body_timeout_s:g} s"})

    def too_many(self) -> bytes:
        """The raw answer to a connection over `max_connections`, written before it is closed."""
        body = json.dumps({"error": f"too many connections (at most {self.max_connections}); retry"}).encode()
        return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                b"Connection: close\r\nServer: runbook-serve\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body)

    def too_large(self) -> Response:
        """The answer to a body over `max_body_bytes` (the connection is closed after it)."""
        return Response.json(413, {"error": f"payload over {self.max_body_bytes} bytes"})

    def handle(self, request: Request) -> Response:
        """Answer one request (runs in a handler thread)."""
        raise NotImplementedError

    def over_capacity(self) -> None:
        """A connection was refused over `max_connections` (subclasses count it)."""

    def header_timed_out(self) -> None:
        """A connection was closed at the header deadline (subclasses count it)."""

    def handler_failed(self, request: Request, exc: Exception) -> Response:
        """The answer when `handle` raised (a bug): subclasses log and count it; never a silent 500."""
        return Response.json(500, {"error": f"internal error ({type(exc).__name__})"})


@functools.cache
def _capped_server_class() -> type:
    from aiohttp import web

    class CappedServer(web.Server):  # type: ignore[misc]
        """aiohttp's low-level server with a connection cap and a first-request header deadline."""

        def __init__(self, handler: Any, *, owner: HttpServer, **kwargs: Any) -> None:
            super().__init__(handler, **kwargs)
            self._owner = owner
            self.deadlines: dict[Any, asyncio.TimerHandle] = {}  # touched on the loop thread only

        def connection_made(self, handler: Any, transport: Any) -> None:
            super().connection_made(handler, transport)
            owner = self._owner
            if len(self._connections) > owner.max_connections:
                owner.over_capacity()
                transport.write(owner.too_many())
                transport.close()
                return
            self.deadlines[handler] = asyncio.get_running_loop().call_later(
                owner.header_timeout_s, _header_deadline, owner, self.deadlines, handler, transport)

        def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
            deadline = self.deadlines.pop(handler, None)
            if deadline is not None:
                deadline.cancel()
            super().connection_lost(handler, exc)

    return CappedServer


def _header_deadline(owner: HttpServer, deadlines: dict[Any, Any], handler: Any, transport: Any) -> None:
    """No complete request `header_timeout_s` after connecting (a slowloris): closed, bytes or not."""
    deadlines.pop(handler, None)
    if not transport.is_closing():
        owner.header_timed_out()
        transport.close()


def _CappedServer(handler: Any, *, owner: HttpServer, **kwargs: Any) -> Any:  # noqa: N802 - a class, made lazily
    return _capped_server_class()(handler, owner=owner, **kwargs)
