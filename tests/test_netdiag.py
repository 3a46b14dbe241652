import asyncio
import socket

from runbook_lib.sources import netdiag
from runbook_lib.sim.mistral import MistralSimulator


def test_phases_against_simulator_answer_401_without_key():
    with MistralSimulator() as sim:
        report = asyncio.run(netdiag.diagnose(sim.url, timeout_s=2))
    assert report.failed_phase is None and report.addresses == ["127.0.0.1"]
    names = [p.name for p in report.phases]
    assert names == ["dns", "tcp", "first_byte"]
    assert all(p.ok and p.ms is not None for p in report.phases)
    assert report.phases[-1].detail.startswith("HTTP/1.1 401")


def test_refused_connection_fails_in_tcp_phase(dead_port):
    port = dead_port
    report = asyncio.run(netdiag.diagnose(f"http://127.0.0.1:{port}", timeout_s=1))
    assert report.failed_phase == "tcp" and "Refused" in report.phases[-1].detail


def test_silent_server_fails_at_first_byte_within_bound():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    try:
        report = asyncio.run(netdiag.diagnose(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout_s=0.5))
    finally:
        srv.close()
    assert report.failed_phase == "first_byte" and "0.5 s" in report.phases[-1].detail


def test_tls_phase_fails_against_plain_http_server():
    with MistralSimulator() as sim:
        url = sim.url.replace("http://", "https://")
        report = asyncio.run(netdiag.diagnose(url, timeout_s=2))
    assert report.failed_phase == "tls"


def test_dns_failure_phase():
    report = asyncio.run(netdiag.diagnose("https://no-such-host.invalid", timeout_s=2))
    assert report.failed_phase == "dns" and report.addresses == []


def test_proxy_env_masks_credentials():
    env = {"HTTPS_PROXY": "http://user:s3cretpw@proxy.corp:3128", "NO_PROXY": "localhost,.svc"}
    out = netdiag.proxy_environment(env)
    assert "s3cretpw" not in str(out) and "proxy.corp:3128" in out["HTTPS_PROXY"]
    assert out["NO_PROXY"] == "localhost,.svc"
