"""A small threaded HTTP server base shared by the simulators (stdlib only, light to import).

Why not a framework: the simulators must start in milliseconds on port 0, live several to a
process, hang on purpose, stream SSE, and stop within a bound even while requests are stuck.
`SimServer` gives exactly that: one `ThreadingHTTPServer` (HTTP/1.1 keep-alive, daemon threads),
a `handle(request) -> response` hook, and a `stop()` that shuts the listener *and* every open
connection, so a stopped simulator answers "connection refused" even to pooled keep-alive clients.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .._signals import wait_for_stop_signal  # noqa: F401  one definition; the simulators re-export it

MAX_BODY_BYTES = 10 * 1024 * 1024
IDLE_KEEPALIVE_S = 60.0  # an idle keep-alive connection is closed after this (bounds handler threads)


def utc_iso(ts: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, the format every record in the project uses."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `predicate` until truthy or `timeout_s` passes; exceptions count as "not yet".

    Tests and the demo use it to wait, bounded, until a fault injected in the simulator shows up
    in our service's health.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - a server not up yet, a key missing: not yet true
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval_s, remaining))


@dataclass
class Request:
    """What a handler needs from one HTTP request (body already read)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client: str

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError on bad JSON)."""
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclass
class Response:
    """A complete answer: sent with Content-Length, connection kept alive."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        """JSON body the way the real gateway writes it (compact separators)."""
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), "application/json",
                   dict(headers or {}))


@dataclass
class StreamResponse:
    """A streamed answer, sent with `Transfer-Encoding: chunked` (one chunk per item)."""

    status: int
    chunks: Iterable[bytes]
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


class NoResponse:
    """Close the connection without answering (a hang released by stop, a dropped request)."""


NO_RESPONSE = NoResponse()
Answer = Response | StreamResponse | NoResponse


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: SimServer) -> None:
        self.owner = owner
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sim"
    sys_version = ""
    timeout = IDLE_KEEPALIVE_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        try:  # headers and body go out in separate writes: no Nagle/delayed-ACK 40 ms stalls
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self) -> None:
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: the simulators keep their own request logs

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > self.server.owner.max_body_bytes:
                    return None
                out += self.rfile.read(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.owner.max_body_bytes:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if body is None:
            self._send(owner.too_large())
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        req = Request(self.command, parts.path or "/", parse_qs(parts.query), self.headers, body,
                      self.client_address[0])
        try:
            answer = owner.handle(req)
        except Exception:  # noqa: BLE001 - a simulator bug must not kill the connection thread silently
            answer = Response.json(500, {"detail": "Internal Server Error"})
        if owner.stopping:
            answer = NO_RESPONSE
        self._send(answer)

    def _send(self, answer: Answer) -> None:
        if isinstance(answer, NoResponse):
            self.close_connection = True
            return
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for k, v in answer.headers.items():
                self.send_header(k, v)
            if isinstance(answer, Response):
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for chunk in answer.chunks:
                    if self.server.owner.stopping:
                        self.close_connection = True
                        return
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class SimServer:
    """Base of the simulators: bind, serve in daemon threads, stop within a bound.

    Subclasses implement `handle(request) -> Response | StreamResponse | NO_RESPONSE`; a handler
    that blocks on purpose should wait on `self.stop_event` so `stop()` releases it.
    """

    max_body_bytes = MAX_BODY_BYTES  # a larger body is refused with `too_large()`, unread

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind (port 0 = any free port, kept for restarts) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self.stop_event = threading.Event()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting, release blocked handlers and drop open connections; bounded."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stop_event.set()
        self._on_stop()
        server.shutdown()
        server.server_close()  # listener closed: new connections are refused
        with server.conns_lock:
            conns = list(server.conns)
        for conn in conns:  # pooled keep-alive connections too: refuse, don't keep serving
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout_s)
        self._server = None
        self._thread = None

    def _on_stop(self) -> None:
        """Hook: release anything the subclass blocks on (called before the listener closes)."""

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The real port (after `start()` when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:18080 (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def too_large(self) -> Response:
        """The answer to a body over `max_body_bytes` (the connection is closed after it)."""
        return Response.json(413, {"detail": "Request Entity Too Large"})

    # -- to implement ------------------------------------------------------------------------
    def handle(self, request: Request) -> Answer:
        """Answer one request (runs in the connection's thread)."""
        raise NotImplementedError
