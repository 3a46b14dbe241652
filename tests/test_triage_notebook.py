"""Integration: triage.ipynb executed headless against the simulators, in every fault mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook

# mode, mode options, extra parameters, expected API verdict, severity, branch, service status wanted first
CASES = [
    ("ok", {}, {}, "ok", "P4", "resolved", {"ok"}),
    ("auth_failure", {}, {}, "auth_failure", "P1", "auth", {"down"}),
    # our service down on 429s: a complete outage for users, P1 (rate limiting seen only by probes is P2)
    ("rate_limited", {}, {}, "rate_limited", "P1", "rate_limit", {"down"}),
    ("capacity_exceeded", {}, {}, "capacity_exceeded", "P1", "rate_limit", {"down"}),
    ("server_error", {"status": 500}, {}, "server_error", "P1", "provider_error", {"down"}),
    ("server_error", {"status": 502}, {}, "server_error", "P1", "provider_error", {"down"}),
    ("server_error", {"status": 503}, {}, "server_error", "P1", "provider_error", {"down"}),
    ("slow", {"latency_s": 1.0}, {"latency_threshold_ms": 400.0, "timeout_s": 4.0}, "ok", "P2", "network", None),
    ("hang", {}, {"timeout_s": 1.0}, "timeout", "P1", "network", None),
]


@pytest.mark.parametrize("mode,opts,extra,verdict,level,branch,settle", CASES,
                         ids=[f"{c[0]}-{c[1].get('status', '')}".rstrip("-") for c in CASES])
def test_triage_classifies_each_fault(stack, run_triage, mode, opts, extra, verdict, level, branch, settle):
    stack.set_mode(mode, **opts)
    if settle:
        assert stack.wait_for_service_status(settle, timeout_s=10), "service never reflected the fault"
    result = run_triage(stack, **extra)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["mistral_api"]["verdict"] == verdict
    assert rec["severity"]["level"] == level, rec["severity"]
    assert rec["decision"]["branch"] == branch
    assert rec["verdict"]["line"].startswith(level)
    assert len(rec["mistral_api"]["probes"]) == rec["parameters"]["samples"]
    if settle:
        assert rec["service_health"]["status"] in settle
    if mode == "slow":
        assert rec["mistral_api"]["slow"] is True
    if mode == "hang":  # concurrency: 5 hanging probes + service, all bounded by one timeout
        assert rec["collection"]["timings_s"]["total_s"] < 1.0 + 1.5


def test_rate_limit_headers_recorded(stack, run_triage):
    stack.set_mode("rate_limited")
    rec = read_records(run_triage(stack).notebook_path)
    assert rec["mistral_api"]["ratelimit"].get("x-ratelimit-remaining-req-minute") == "0"


def test_flaky_is_partial(stack, run_triage):
    stack.set_mode("flaky", fail_fraction=0.5)
    rec = read_records(run_triage(stack, samples=16).notebook_path)
    assert rec["mistral_api"]["verdict"] == "partial"
    assert 0 < rec["mistral_api"]["error_fraction"] < 1
    assert rec["severity"]["level"] in ("P2", "P3")
    assert rec["decision"]["branch"] in ("provider_error", "rate_limit")


def test_stopped_simulator_is_connection_refused(stack, run_triage):
    url = stack.mistral_url
    stack.mistral.stop()
    # P1 is the truth once our service's window holds only failed calls; triaged at its first
    # failure it would rightly say "degraded" (P2): wait for the outage to show, bounded.
    assert stack.wait_for_service_status({"down"}, timeout_s=15)
    rec = read_records(run_triage(stack, mistral_url=url).notebook_path)
    assert rec["mistral_api"]["verdict"] == "connection_refused"
    assert (rec["severity"]["level"], rec["decision"]["branch"]) == ("P1", "network")


def test_absent_key_is_an_auth_failure(stack, run_triage, monkeypatch):
    monkeypatch.setenv("EMPTY_KEY_VAR", "")
    rec = read_records(run_triage(stack, api_key_env="EMPTY_KEY_VAR").notebook_path)
    assert rec["api_key"]["present"] is False
    assert rec["mistral_api"]["verdict"] == "auth_failure"
    assert rec["decision"]["notebook"] == "diagnose_auth"


def test_service_down_unreachable_still_reaches_verdict(stack, run_triage, dead_port):
    port = dead_port
    rec = read_records(run_triage(stack, service_health_url=f"http://127.0.0.1:{port}/health").notebook_path)
    assert rec["service_health"]["status"] == "unreachable"
    assert rec["severity"]["level"] == "P2" and "service health" in rec["verdict"]["unavailable"]


def test_key_in_deployment_differs_from_on_call_key(api_key, run_triage):
    """API accepts the on-call key, but our service's calls carry a stale key: auth branch."""
    from runbook_lib.sim.mistral import MistralSimulator
    from runbook_lib.sim.service import ServiceSimulator

    with MistralSimulator(api_keys=[api_key]) as sim, \
            ServiceSimulator(sim.url, api_key="stale-key-from-old-secret", rate=20.0) as svc:
        from runbook_lib.sim._http import wait_until
        import httpx

        assert wait_until(lambda: httpx.get(svc.health_url).json()["services"]["mistral"]["status"] == "down", 10)
        rec = read_records(run_triage(mistral_url=sim.url, service_health_url=svc.health_url).notebook_path)
    assert rec["mistral_api"]["verdict"] == "ok"
    assert rec["service_health"]["mistral"]["last_status"] == "401"
    assert (rec["severity"]["level"], rec["decision"]["branch"]) == ("P1", "auth")


def test_prometheus_unreachable_is_reported_not_zero(stack, run_triage, dead_port):
    port = dead_port
    rec = read_records(run_triage(stack, prometheus_url=f"http://127.0.0.1:{port}").notebook_path)
    assert rec["error_rate"]["status"] == "unavailable"
    assert "metrics" in " ".join(rec["verdict"]["unavailable"])
    assert rec["severity"]["level"] == "P4" and "monitoring gaps" in rec["severity"]["reason"]


def test_record_folder_has_notebook_html_and_status(stack, run_triage):
    result = run_triage(stack)
    folder = Path(result.record_dir)
    assert {p.name for p in folder.iterdir()} >= {"triage.ipynb", "triage.html", "triage.run.json"}
    meta = json.loads((folder / "triage.ipynb").read_text())["metadata"]["runbook"]
    assert meta["status"] == "succeeded" and meta["verdict"]["line"] == result.verdict_line()
    html = (folder / "triage.html").read_text()
    assert "Verdict" in html and result.verdict["severity"] in html
    assert "Traceback" not in html and "object at 0x" not in html
