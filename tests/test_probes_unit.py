import asyncio
import socket

import httpx

from runbook_lib.sources import probes
from runbook_lib.secrets import read_secret


def test_classify_response_table():
    assert probes.classify_response(200, {}) == probes.OK
    assert probes.classify_response(401, {"detail": "Unauthorized"}) == probes.AUTH_FAILURE
    assert probes.classify_response(403, None) == probes.FORBIDDEN
    assert probes.classify_response(429, {"message": "Rate limit exceeded", "code": "1300"}) == probes.RATE_LIMITED
    assert probes.classify_response(
        429, {"message": "Service tier capacity exceeded for this model."}) == probes.CAPACITY_EXCEEDED
    for code in (500, 502, 503, 504):
        assert probes.classify_response(code, None) == probes.SERVER_ERROR
    assert probes.classify_response(404, None) == probes.CLIENT_ERROR
    assert probes.classify_response(302, None) == probes.UNEXPECTED


def _probe(url, timeout=1.0):
    async def go():
        async with probes.client(timeout) as c:
            return await probes.probe_mistral(c, url, read_secret("UNSET_FOR_TEST", {}), timeout)
    return asyncio.run(go())


def test_refused_connection_is_told_apart(dead_port):
    r = _probe(f"http://127.0.0.1:{dead_port}")
    assert r.classification == probes.CONNECTION_REFUSED and r.status_code is None


def test_dns_failure_is_told_apart():
    r = _probe("http://no-such-host.invalid")
    assert r.classification in (probes.DNS_FAILURE, probes.TIMEOUT)


def test_silent_server_times_out_within_bound():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)  # accepts into the backlog, never answers
    try:
        r = _probe(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.5)
    finally:
        srv.close()
    assert r.classification == probes.TIMEOUT and r.latency_ms < 1500


def test_summarise_partial_and_slow():
    def res(cls, ms=10.0):
        return probes.ProbeResult("mistral_api", "u", "t", ms, cls)
    s = probes.summarise([res("ok"), res("ok"), res("rate_limited"), res("server_error"), res("rate_limited")], 2000)
    assert s.verdict == "partial" and s.dominant_error == "rate_limited" and s.error_fraction == 0.6
    slow = probes.summarise([res("ok", 3000), res("ok", 2500)], 2000)
    assert slow.verdict == "ok" and slow.slow
    assert probes.summarise([res("timeout")] * 3, 2000).verdict == "timeout"


def test_transport_classes():
    assert probes.classify_transport_error(httpx.ReadTimeout("x")) == probes.TIMEOUT
    assert probes.classify_transport_error(asyncio.TimeoutError()) == probes.TIMEOUT


def test_client_verifies_certificates_unless_every_target_is_plain_http():
    import ssl

    async def verify_mode(tls):
        async with probes.client(1.0, tls=tls) as c:
            return c._transport._pool._ssl_context.verify_mode  # httpx keeps the context here
    assert asyncio.run(verify_mode(True)) == ssl.CERT_REQUIRED
    assert asyncio.run(verify_mode(False)) == ssl.CERT_NONE
