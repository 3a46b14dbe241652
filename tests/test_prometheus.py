"""Against a real Prometheus (Debian package) scraping the simulated service, and promtool checks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from runbook_lib.sources import metrics
from runbook_lib.errors import RunbookError, SourceUnavailable
from runbook_lib.record import read_records
from runbook_lib.sim.prometheus import LocalPrometheus

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
RATE = 10.0  # our service's background requests/s, split over its two models

pytestmark = pytest.mark.xdist_group("prometheus")


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "mistral-rules.yml"],
                                  ["test", "rules", "mistral-rules.test.yml"]], ids=lambda a: " ".join(a[:2]))
def test_promtool_accepts_shipped_config_and_rules(args, require_binary):
    out = subprocess.run([require_binary("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_names_an_existing_or_planned_notebook():
    import yaml  # PyYAML comes with jupyter's dependencies

    rules = yaml.safe_load((DEPLOY / "mistral-rules.yml").read_text())["groups"][0]["rules"]
    planned = {"triage", "diagnose_auth", "diagnose_rate_limit", "diagnose_server_error", "diagnose_network"}
    assert len(rules) >= 4
    for rule in rules:
        assert rule["annotations"]["runbook"] in planned
        assert rule["annotations"]["runbook_url"].endswith(f"/notebooks/{rule['annotations']['runbook']}.ipynb")
        assert rule["annotations"]["runbook_url"].startswith("https://")  # absolute: usable from a pager


@pytest.fixture(scope="module")
def prom_stack(require_binary):
    import secrets

    from runbook_lib.sim.stack import EmbeddedStack

    require_binary("prometheus")
    key = "sim-" + secrets.token_urlsafe(24)
    with EmbeddedStack(api_key=key, rate=RATE) as stack:
        host_port = stack.service.url.split("://", 1)[1]
        with LocalPrometheus([host_port], scrape_interval="1s", rule_files=[DEPLOY / "mistral-rules.yml"]) as prom:
            assert prom.wait_for_data("sum(rate(mistral_requests_total[5s]))", timeout_s=30)
            stack.key = key
            yield stack, prom


def test_instant_query_shapes(prom_stack):
    _, prom = prom_stack
    ok = metrics.instant_sync(prom.url, "sum by (model) (rate(mistral_requests_total[10s]))", 5)
    assert ok.status == "ok" and {s["labels"]["model"] for s in ok.series} >= {"mistral-small-latest"}
    empty = metrics.instant_sync(prom.url, 'mistral_requests_total{model="no-such-model"}', 5)
    assert empty.status == "empty" and empty.scalar() is None
    bad = metrics.instant_sync(prom.url, "sum(rate(mistral_requests_total[", 5)
    assert bad.status == "error" and "parse" in (bad.error or "").lower()


def test_range_query_dataframe_and_errors(prom_stack):
    _, prom = prom_stack
    end = time.time()
    frame = metrics.range_query(prom.url, "sum by (model, code) (rate(mistral_requests_total[5s]))",
                                end - 20, end, 2, 5)
    assert {"time", "value", "model", "code"} <= set(frame.columns) and len(frame) > 0
    assert str(frame["time"].dt.tz) == "UTC"
    with pytest.raises(RunbookError, match="PromQL error"):
        metrics.range_query(prom.url, "rate(", end - 20, end, 2, 5)
    with pytest.raises(SourceUnavailable):
        metrics.range_query("http://127.0.0.1:9", "up", end - 20, end, 2, 1)


@pytest.mark.notebook
def test_triage_step3_rate_per_model_matches_generated_load(prom_stack, run_triage, monkeypatch):
    stack, prom = prom_stack
    monkeypatch.setenv("MISTRAL_API_KEY", stack.key)
    stack.set_mode("ok")
    time.sleep(11)  # a clean 10 s window
    rec = read_records(run_triage(stack, prometheus_url=prom.url, metrics_window="10s").notebook_path)
    m = rec["error_rate"]
    assert m["status"] == "ok"
    per_model = {k: v["requests_per_s"] for k, v in m["per_model"].items()}
    assert len(per_model) == 2, per_model
    for model, rate in per_model.items():
        assert rate == pytest.approx(RATE / 2, rel=0.35), (model, rate)
    assert m["error_ratio"] == pytest.approx(0.0, abs=0.01)
    assert m["p95_latency_s"] is not None and m["p95_latency_s"] < 1.0
    assert rec["severity"]["level"] == "P4"


@pytest.mark.notebook
def test_triage_step3_feeds_severity_under_partial_failures(prom_stack, run_triage, monkeypatch):
    stack, prom = prom_stack
    monkeypatch.setenv("MISTRAL_API_KEY", stack.key)
    stack.set_mode("flaky", fail_fraction=0.3)
    time.sleep(11)
    # 8 probes: the chance that all fail at 30% (which would rightly read as an outage) is 7e-5.
    rec = read_records(run_triage(stack, prometheus_url=prom.url, metrics_window="10s", samples=8).notebook_path)
    stack.set_mode("ok")
    seen = (rec["error_rate"], rec["mistral_api"]["counts"], rec["severity"])
    ratio = rec["error_rate"]["error_ratio"]
    assert ratio == pytest.approx(0.3, abs=0.15), seen
    errors = sum(v.get("errors_per_s") or 0 for v in rec["error_rate"]["per_model"].values())
    assert errors > 0, seen
    assert rec["severity"]["level"] in ("P2", "P3"), seen


def test_missing_prometheus_binary_says_how_to_install():
    with pytest.raises(SourceUnavailable, match="apt-get install"):
        LocalPrometheus(["127.0.0.1:1"], binary="no-such-prometheus-binary").start()


def test_dead_prometheus_is_unavailable_quickly():
    t0 = time.perf_counter()
    result = metrics.instant_sync("http://127.0.0.1:9", "up", 1.0)
    assert result.status == "unavailable" and result.scalar() is None
    assert time.perf_counter() - t0 < 2.0


def test_server_error_history_from_real_prometheus(prom_stack):
    """diagnose_server_error's error mix over time: the 30-minute range query against real data."""
    from runbook_lib.runbooks import diagnose_server_error as se

    stack, prom = prom_stack
    stack.set_mode("server_error", status=503)
    try:
        assert prom.wait_for_data('sum(rate(mistral_errors_total{code="503"}[5s]))', timeout_s=20)
        value = se.ServerErrorRunbook({"prometheus_url": prom.url, "timeout_s": 5.0}, None)._history()
    finally:
        stack.set_mode("ok")
    assert value["status"] == "ok", value
    assert value["last"].get("503", 0) > 0
