"""serve's HTTP layer: a threaded stdlib server with one `handle(request) -> Response` hook.

Only what `runbook serve` needs: short JSON answers over HTTP/1.1 keep-alive, a body-size limit
checked before the body is read, and a `stop()` that closes the listener *and* open keep-alive
connections within a bound, so a stopped server refuses even pooled clients. Standard library
only, like the rest of serve today (a later issue moves serve to aiohttp; this is not a framework).
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

IDLE_KEEPALIVE_S = 60.0  # an idle keep-alive connection is closed after this (bounds handler threads)


@dataclass
class Request:
    """What a handler needs from one HTTP request (body already read, within the limit)."""

    method: str
    path: str
    headers: Message
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: HttpServer) -> None:
        self.owner = owner
        self.conns: set[socket.socket] = set()  # open connections, so stop() can close keep-alive ones
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runbook-serve"
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

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # serve logs what it decides, not every request line

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over the owner's `max_body_bytes` (left unread)."""
        limit = self.server.owner.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > limit:
                    return None
                out += self.rfile.read(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if body is None:  # the rest of the body is unread: answer, then close the connection
            self._send(owner.too_large())
            self.close_connection = True
            return
        request = Request(self.command, urlsplit(self.path).path or "/", self.headers, body, self.client_address[0])
        try:
            answer = owner.handle(request)
        except Exception:  # noqa: BLE001 - a handler bug answers 500 instead of killing the connection thread
            answer = Response.json(500, {"error": "internal server error"})
        self._send(answer)

    def _send(self, answer: Response) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class HttpServer:
    """Bind, serve in daemon threads, stop within a bound; subclasses implement `handle`."""

    max_body_bytes = 1024 * 1024  # a larger body is refused with `too_large()`, unread

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind (port 0 = any free port) and serve in a daemon thread; a no-op when running."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting and drop open connections (pooled keep-alive ones too); bounded."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()  # listener closed: new connections are refused
        with server.conns_lock:
            conns = list(server.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout_s)
        self._server = None
        self._thread = None

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
        """Base URL, e.g. http://127.0.0.1:9095 (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def too_large(self) -> Response:
        """The answer to a body over `max_body_bytes` (the connection is closed after it)."""
        return Response.json(413, {"error": f"payload over {self.max_body_bytes} bytes"})

    def handle(self, request: Request) -> Response:
        """Answer one request (runs in the connection's thread)."""
        raise NotImplementedError
