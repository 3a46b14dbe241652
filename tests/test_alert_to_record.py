"""From alert to record, with the real servers: simulator fault -> Prometheus rule fires -> the real
Alertmanager calls `runbook serve` -> an incident folder with the right class; fault cleared ->
the incident is marked resolved.

The rules are deploy/prometheus/mistral-rules.yml with two edits so a test sees a fire and a
resolve in seconds, not minutes: every `for:` becomes 2s and every `[5m]` range becomes `[10s]`.
The expressions, labels and annotations are the shipped ones (promtool checks the variant).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RULES = ROOT / "deploy" / "prometheus" / "mistral-rules.yml"
TOKEN = "am-webhook-" + "7f3c9a1e5b2d4c6f"


@pytest.fixture
def servers_required(require_binary):
    from runbook_lib.sim.alertmanager import BINARY

    for binary in ("prometheus", BINARY):
        require_binary(binary)


def fast_rules(dest: Path) -> Path:
    text = RULES.read_text()
    fast = re.sub(r"\bfor: \d+m\b", "for: 2s", text).replace("[5m]", "[10s]")
    assert fast.count("for: 2s") == text.count("for:") and "[5m]" not in fast
    dest.write_text(fast)
    promtool = subprocess.run(["promtool", "check", "rules", str(dest)], capture_output=True, text=True, timeout=30)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _incidents(outputs: Path) -> list[dict]:
    if not outputs.exists():
        return []
    found = [read_index(p) for p in sorted(outputs.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [i for i in found if i and i.get("source") == "alertmanager"]


def _pieces(secret: str, n: int = 8) -> set[str]:
    return {secret[i:i + n] for i in range(len(secret) - n + 1)}


def test_fault_fires_alert_serve_records_incident_then_resolves(api_key, stack, tmp_path, servers_required,
                                                                monkeypatch):
    from runbook_lib.sim.alertmanager import LocalAlertmanager
    from runbook_lib.sim.prometheus import LocalPrometheus

    rules = fast_rules(tmp_path / "mistral-rules.fast.yml")
    outputs = tmp_path / "outputs"
    port = _free_port()
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("RUNBOOK_SERVE_TOKEN", TOKEN)
    serve_log = tmp_path / "serve.log"
    service_target = stack.service_health_url.split("://", 1)[1].split("/", 1)[0]

    with LocalAlertmanager(f"http://127.0.0.1:{port}/webhook", bearer_token_file=tmp_path / "token") as am, \
            LocalPrometheus([service_target], rule_files=[rules], alertmanagers=[am.address]) as prom:
        cmd = [str(BIN / "runbook"), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir", str(outputs),
               "-r", "mistral_url", stack.mistral_url, "-r", "service_health_url", stack.service_health_url,
               "-r", "prometheus_url", prom.url, "-r", "metrics_window", "10s", "-p", "timeout_s", "2.0",
               "-r", "status_feed_url", f"{stack.mistral_url}/feed.rss", "-p", "monitor_interval_s", "0.2",
               "-p", "monitor_max_s", "1.0", "-p", "healthy_needed", "2"]
        serve = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(serve_log, "wb"))
        try:
            assert wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200,
                              20), serve_log.read_text()
            assert prom.wait_for_data("sum(mistral_requests_total)", timeout_s=30)
            time.sleep(2)  # a little healthy traffic first

            stack.set_mode("server_error", status=503)
            names = lambda i: {a["name"] for a in i.get("alerts", [])}  # noqa: E731
            # 5xx fire MistralServerErrors and MistralErrorRateHigh: whichever Alertmanager sends
            # first opens the incident, the other joins it (one fault, one incident, one run)
            fired = lambda: [i for i in _incidents(outputs)  # noqa: E731
                             if {"MistralServerErrors", "MistralErrorRateHigh"} <= names(i)
                             and i.get("status") in ("triaged", "diagnosed", "failed")]
            assert wait_until(fired, 150, 0.5), (
                f"no finished incident for the 5xx alerts; alertmanager holds {am.alerts()}; "
                f"incidents {_incidents(outputs)}; serve log:\n{serve_log.read_text()[-3000:]}")
            incident = fired()[0]
            assert incident["error_class"] == "provider_error", incident
            assert incident["severity"] in ("P1", "P2") and incident["status"] == "diagnosed", incident
            assert [n["name"] for n in incident["notebooks"]] == ["triage", "diagnose_server_error"]
            assert incident["alert"]["name"] in ("MistralServerErrors", "MistralErrorRateHigh")
            assert incident["alert_state"] == "firing" and incident["alerts"][0]["status"] == "firing"
            assert len(_incidents(outputs)) == 1, "one fault, one incident"

            stack.set_mode("ok")
            resolved = lambda: [i for i in _incidents(outputs) if i.get("alert_state") == "resolved"  # noqa: E731
                                and i["id"] == incident["id"]]
            assert wait_until(resolved, 120, 0.5), (
                f"not marked resolved; alertmanager holds {am.alerts()}; serve log:\n{serve_log.read_text()[-3000:]}")
            done = resolved()[0]
            assert done["alerts"][-1]["status"] == "resolved" and done["resolved"]["by"] == "alertmanager"
            ended = {a["fingerprint"] for a in done["alerts"] if a["status"] == "resolved"}
            assert ended == {a["fingerprint"] for a in done["alerts"]}, "resolved only when all its alerts are"
            # the lifecycle follows the alert: resolved, with the time; the response's outcome stays readable
            assert done["status"] == "resolved" and done["resolved_at"], done
            assert done["diagnosis"] and [n["status"] for n in done["notebooks"]] == ["succeeded", "succeeded"], done

            # anything else the fault fired (a latency alert) joined it or got its own incident, resolved too
            assert wait_until(lambda: _incidents(outputs) and all(
                i.get("alert_state") == "resolved" and i.get("status") != "running" for i in _incidents(outputs)),
                120, 0.5), _incidents(outputs)
            everything = _incidents(outputs)
            fingerprints = [fp for i in everything for fp in {a["fingerprint"] for a in i["alerts"]}]
            assert len(fingerprints) == len(set(fingerprints)), "an alert belongs to one incident"
            assert set().union(*map(names, everything)) <= {
                "MistralServerErrors", "MistralErrorRateHigh", "MistralLatencyP95High"}
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert f"runbook_serve_runs_started_total {float(len(everything))}" in metrics
            assert "runbook_serve_runs_failed_total 0.0" in metrics
            assert 'runbook_serve_webhooks_total{outcome="unauthorized"}' not in metrics  # AM sent the token
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
    assert serve.returncode == 0, serve_log.read_text()[-2000:]
    shown = subprocess.run([str(BIN / "runbook"), "show", done["id"], "--output-dir", str(outputs)],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "resolved at" in shown.stdout, shown.stdout + shown.stderr
    assert "MistralServerErrors" in shown.stdout and "MistralErrorRateHigh" in shown.stdout  # opener + joined

    text = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in outputs.rglob("*") if p.is_file())
    assert not [p for p in _pieces(api_key) | _pieces(TOKEN) if p in text], "a secret reached the records"


def test_shipped_alertmanager_route_is_valid_and_points_at_serve(servers_required):
    """deploy/alertmanager/alertmanager.yml: amtool accepts it, and its webhook is serve's default address."""
    import yaml

    from runbook_lib.serve.server import DEFAULT_PORT

    path = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    out = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load(path.read_text())
    hooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert [h["url"] for h in hooks] == [f"http://127.0.0.1:{DEFAULT_PORT}/webhook"]
    assert hooks[0]["send_resolved"] is True  # serve marks incidents resolved from these
    route = config["route"]["routes"][0]
    assert route["receiver"] == "runbook-serve" and route["continue"] is True
