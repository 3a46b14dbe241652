"""Probes through an HTTPS proxy (CONNECT) to the simulator behind TLS, trusting a CA three ways.

The chain is real sockets all the way: httpx (from `HTTPS_PROXY`) -> a small CONNECT proxy written
here -> a TLS terminator holding a certificate from a test CA -> the Mistral simulator. The CA is
trusted through the runbooks' `ca_bundle` parameter or httpx's `SSL_CERT_FILE`; with neither, the
probe fails and names `ca_bundle`. The proxy records every CONNECT, so "went through the proxy" is
seen, not assumed. Also: the monthly quota headers reach the records where the per-minute ones are.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.params import ca_file
from runbook_lib.secrets import read_secret
from runbook_lib.sim.mistral import MistralSimulator
from runbook_lib.sources import probes
from tls_support import TestCA


class _Loop:
    """An event loop in a daemon thread, for the test's small servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-net")
        self._thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()  # else its self-pipe sockets surface as ResourceWarnings in a later test


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


class Net:
    """A CONNECT proxy and a TLS terminator in front of `upstream_port`, on 127.0.0.1."""

    def __init__(self, upstream_port: int, server_ctx: ssl.SSLContext) -> None:
        self.connects: list[str] = []
        self._loop = _Loop()
        self._servers = [self._loop.run(asyncio.start_server(self._tls_client, "127.0.0.1", 0, ssl=server_ctx)),
                         self._loop.run(asyncio.start_server(self._proxy_client, "127.0.0.1", 0))]
        self.upstream_port = upstream_port
        self.tls_port = self._servers[0].sockets[0].getsockname()[1]
        self.proxy_url = f"http://127.0.0.1:{self._servers[1].sockets[0].getsockname()[1]}"

    async def _tls_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await _splice((reader, writer), upstream)

    async def _proxy_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method != "CONNECT":  # an https-only proxy: plain requests are refused, visibly
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        self.connects.append(target)
        host, port = target.rsplit(":", 1)
        upstream = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice((reader, writer), upstream)

    def close(self) -> None:
        async def shutdown() -> None:  # the pipes end inside the running loop, not when it is collected
            for s in self._servers:
                s.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._loop.run(shutdown())
        self._loop.stop()


@pytest.fixture(scope="module")
def tls_net(tmp_path_factory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("probe-tls")
    ca = TestCA(folder)
    server = ca.server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(server.cert), str(server.key))
    key = "sim-" + secrets.token_urlsafe(24)
    with MistralSimulator(api_keys=[key]) as sim:
        net = Net(int(sim.url.rsplit(":", 1)[1]), ctx)
        try:
            yield {"ca": ca, "key": key, "sim": sim, "net": net, "url": f"https://127.0.0.1:{net.tls_port}"}
        finally:
            net.close()


def _probe(url: str, key: str, ca_bundle: str = "") -> probes.ProbeResult:
    secret = read_secret("PROBE_KEY", {"PROBE_KEY": key})

    async def go() -> probes.ProbeResult:
        async with probes.client(5.0, tls=True, ca_bundle=ca_bundle) as c:
            return await probes.probe_mistral(c, url, secret, 5.0)
    return asyncio.run(go())


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_through_an_https_proxy_trusting_the_ca_bundle_parameter(tls_net, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", tls_net["net"].proxy_url)
    before = len(tls_net["net"].connects)
    r = _probe(tls_net["url"], tls_net["key"], ca_bundle=str(tls_net["ca"].cert))
    assert r.classification == probes.OK and r.status_code == 200, r.detail
    assert tls_net["net"].connects[before:] == [f"127.0.0.1:{tls_net['net'].tls_port}"]
    # the monthly quota headers arrive with the per-minute ones (ProbeResult.ratelimit)
    assert int(r.ratelimit["x-ratelimit-remaining-req-month"]) <= int(r.ratelimit["x-ratelimit-limit-req-month"])
    assert {"x-ratelimit-remaining-tokens-month", "x-ratelimit-reset-tokens-month",
            "x-ratelimit-remaining-req-minute"} <= set(r.ratelimit)


def test_ssl_cert_file_from_the_environment_is_honoured(tls_net, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", tls_net["net"].proxy_url)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_net["ca"].cert))
    before = len(tls_net["net"].connects)
    assert _probe(tls_net["url"], tls_net["key"]).classification == probes.OK
    assert len(tls_net["net"].connects) == before + 1


def test_untrusted_certificate_names_ca_bundle(tls_net, monkeypatch):
    _clean_env(monkeypatch)
    r = _probe(tls_net["url"], tls_net["key"])
    assert r.classification == probes.NETWORK_ERROR and r.status_code is None
    assert "not trusted" in r.detail and "ca_bundle" in r.detail, r.detail


def test_no_proxy_bypasses_the_proxy(tls_net, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", tls_net["net"].proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    before = len(tls_net["net"].connects)
    assert _probe(tls_net["url"], tls_net["key"], ca_bundle=str(tls_net["ca"].cert)).classification == probes.OK
    assert len(tls_net["net"].connects) == before


def test_ca_bundle_parameter_is_checked_first(tmp_path):
    assert ca_file("ca_bundle", "") == ""
    (tmp_path / "junk.pem").write_text("not a certificate")
    for bad in (str(tmp_path / "absent.pem"), str(tmp_path / "junk.pem"), "https://example/ca.pem"):
        with pytest.raises(ParameterError) as exc:
            ca_file("ca_bundle", bad)
        assert exc.value.name == "ca_bundle"


@pytest.mark.notebook
def test_triage_through_the_proxy_with_ca_bundle(tls_net, monkeypatch, run_triage):
    """The notebook path: `ca_bundle` as a parameter, HTTPS_PROXY inherited by the kernel."""
    from runbook_lib.record import read_records

    _clean_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", tls_net["net"].proxy_url)
    monkeypatch.setenv("MISTRAL_API_KEY", tls_net["key"])
    before = len(tls_net["net"].connects)
    result = run_triage(mistral_url=tls_net["url"], service_health_url="", ca_bundle=str(tls_net["ca"].cert),
                        samples=2)
    assert result.ok, result.error
    api = read_records(result.notebook_path)["mistral_api"]
    assert api["verdict"] == "ok", api
    assert len(tls_net["net"].connects) >= before + 1  # the kernel's probes went through the proxy
    assert "x-ratelimit-remaining-tokens-month" in api["ratelimit"]  # shown beside the per-minute headers
    assert Path(result.notebook_path).read_text().count("x-ratelimit-remaining-tokens-month") >= 1
