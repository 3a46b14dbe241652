"""Issue 16, item 5: slow and hostile clients against the real `runbook serve`, over raw sockets.

Credentials are checked on the headers before the body is read; a new connection's headers and a
request's body have deadlines that a byte now and then does not extend; connections are capped;
none of it costs a thread."""

from __future__ import annotations

import os
import socket

import psutil

from runbook_lib.sim._http import wait_until
from serve_support import alert, free_port, metric, payload, post, start_serve, stop

TOKEN = "conn-test-token-7f3a9c"


def _closed(sock: socket.socket, wait_s: float = 0.2) -> bool:
    """True once the server closed the connection (EOF or reset); answers read meanwhile are dropped."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _answer(sock: socket.socket, timeout_s: float = 10) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_slow_hostile_and_many_clients(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNBOOK_SERVE_TOKEN": TOKEN}
    proc = start_serve(tmp_path / "outputs", None, port, "--max-connections", "10", "--header-timeout", "2",
                       "--body-timeout", "2", env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # 401 from the headers alone: the 500 kB body is never sent, the answer comes and the connection closes
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 500000\r\n\r\n")
            answer = _answer(s)
        assert answer.startswith(b"HTTP/1.1 401") and b"credentials" in answer, answer
        assert TOKEN.encode() not in answer

        # slowloris: a header line every 0.2 s; closed at the 2 s deadline anyway (an idle timer would never fire)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            sent, closed = 0, False
            for _ in range(60):  # up to 12 s of dripping, 6 times the deadline
                try:
                    s.sendall(b"X-Drip: %d\r\n" % sent)
                    sent += 1
                except OSError:
                    closed = True
                    break
                if _closed(s):
                    closed = True
                    break
            assert closed and sent >= 5, (closed, sent)  # bytes every 0.2 s: an idle timer would never fire
        assert metric(url, 'runbook_serve_connections_closed_total{reason="header_timeout"}') >= 1.0

        # a body trickling in: 408 at the body deadline, though bytes keep coming
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
                      b"Bearer " + TOKEN.encode() + b"\r\nContent-Length: 5000\r\n\r\n")
            got = b""
            for _ in range(60):
                try:
                    s.sendall(b" " * 10)
                except OSError:
                    break
                s.settimeout(0.2)
                try:
                    got += s.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if got:
                    break
            got += _answer(s, 2)
        assert got.startswith(b"HTTP/1.1 408") and b"not received within 2 s" in got, got
        assert metric(url, 'runbook_serve_webhooks_total{outcome="too_slow"}') == 1.0

        # the cap: 10 idle connections held, the 11th is answered 503 and closed; no thread per connection
        serve = psutil.Process(proc.pid)
        threads_before = serve.num_threads()
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        try:
            with socket.create_connection(("127.0.0.1", port)) as extra:
                answer = _answer(extra, 5)
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
            assert serve.num_threads() <= threads_before, (serve.num_threads(), threads_before)
        finally:
            for s in held:
                s.close()
        # the held ones are dropped at their header deadline at the latest; then service is normal
        assert wait_until(lambda: post(url, payload(alert("c0ffee01", name="NotOurs")), auth).status_code == 200, 10)
        assert metric(url, 'runbook_serve_connections_closed_total{reason="over_capacity"}') >= 1.0
    finally:
        assert stop(proc) == 0
    # nothing of the token in the state folder either
    state = tmp_path / "outputs" / ".serve"
    assert TOKEN not in "".join(p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())
