"""Grafana (issue 18): the shipped dashboard is the generated one and Grafana's own SDK models keep every field
of it; every panel's PromQL runs on the real Prometheus scraping our simulated service and returns the series
it is meant to; the threshold lines are the alerting rules' thresholds; the alerts' `dashboard` link opens
this dashboard filtered on the alerting service (expanded by the real promtool); incident annotations go
through Grafana's HTTP API (a local fake that checks the token and the body) only when approved, recorded,
undoable with the recorded command, and the token never appears in any output.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from fake_api_support import FakeServer, grafana_app
from runbook_lib.grafana.annotations import annotate_incident, grafana_target, incident_events
from runbook_lib.grafana.dashboard import DASHBOARD_UID, interpolate, panel_queries, render_dashboard
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.serve.rules import DEFAULT_SERVICE_LABELS, RulesConfig, render_rules

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "grafana" / "mistral-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "mistral-rules.yml"
RUNBOOK = Path(sys.executable).parent / "runbook"


def _dashboard() -> dict:
    return json.loads(SHIPPED.read_text())


# ---- the dashboard ------------------------------------------------------------------------------------------
def test_shipped_dashboard_is_generated_and_survives_the_sdk_models():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    text = SHIPPED.read_text()
    assert text == render_dashboard()
    out = subprocess.run([str(RUNBOOK), "dashboard"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == text, out.stderr
    # decoded into the schema's typed models and encoded again: nothing unknown, nothing lost
    again = json.dumps(Dashboard.from_json(json.loads(text)), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    assert again == text


def test_threshold_lines_are_the_alerting_rules_thresholds():
    rules = {r["alert"]: r for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    panels = _dashboard()["panels"]
    checked = 0
    for alert in ("MistralErrorRateHigh", "MistralServerErrors", "MistralRateLimited", "MistralLatencyP95High"):
        value = float(rules[alert]["expr"].strip().rsplit(">", 1)[1])
        showing = [p for p in panels if alert in p.get("description", "")]
        assert showing, f"no panel shows {alert}'s threshold"
        for p in showing:
            steps = [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            assert value in steps, (alert, p["title"], steps)
            assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed")
            checked += 1
    assert checked == 5


def test_variables_are_the_rules_service_labels_and_every_query_filters_on_them():
    board = _dashboard()
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", *DEFAULT_SERVICE_LABELS]
    targets = [t for p in board["panels"] for t in p["targets"]]
    assert len(targets) == 9
    for t in targets:
        for label in DEFAULT_SERVICE_LABELS:
            assert f'{label}=~"${label}"' in t["expr"], t["expr"]
    other = json.loads(render_dashboard(("namespace", "app")))
    assert [v["name"] for v in other["templating"]["list"]] == ["datasource", "namespace", "app"]
    assert "sum by (namespace, app) (rate(mistral_requests_total" in other["panels"][2]["targets"][0]["expr"]


@pytest.fixture(scope="module")
def scraped(require_binary):
    """Our simulated service under a flaky Mistral (200, 429 and 503) scraped every second by the real Prometheus."""
    from runbook_lib.sim.prometheus import LocalPrometheus
    from runbook_lib.sim.stack import EmbeddedStack

    require_binary("prometheus")
    with EmbeddedStack(api_key="sim-" + secrets.token_urlsafe(24), rate=20.0) as stack:
        stack.set_mode("flaky", fail_fraction=0.5)
        with LocalPrometheus([stack.service.url.split("://", 1)[1]], scrape_interval="1s") as prom:
            for q in ('sum(rate(mistral_errors_total{code="503"}[1m]))', 'sum(rate(mistral_errors_total{code="429"}[1m]))'):
                assert prom.wait_for_data(q, timeout_s=40), f"no data for {q}"
            yield prom


def _query_range(prom, expr: str) -> dict:
    """As Grafana asks for a time-series panel: /api/v1/query_range over the last 30 s."""
    now = time.time()
    r = httpx.get(f"{prom.url}/api/v1/query_range", params={"query": expr, "start": now - 30, "end": now, "step": "2"},
                  timeout=10)
    return r.json()


def test_every_panel_query_runs_on_the_real_prometheus_and_returns_its_series(scraped):
    board = _dashboard()
    results = {}
    for panel in board["panels"]:
        for t in panel["targets"]:
            body = _query_range(scraped, interpolate(t["expr"], DEFAULT_SERVICE_LABELS))
            assert body["status"] == "success", (panel["title"], t["expr"], body)
            series = [s for s in body["data"]["result"] if any(v[1] not in ("NaN", "+Inf") for v in s["values"])]
            assert series, f"{panel['title']} / {t['legendFormat']}: no data for {t['expr']}"
            results[(panel["id"], t["refId"])] = series
    codes = {s["metric"].get("code") for s in results[(1, "A")]}
    assert {"200", "429", "503"} <= codes, codes
    assert all("model" in s["metric"] for s in results[(1, "A")] + results[(6, "A")])
    # the 429 ratio is a ratio: between 0 and 1, and the flaky simulator makes it clearly non-zero
    last = float(results[(4, "A")][0]["values"][-1][1])
    assert 0.02 < last < 1.0, last


def test_a_misspelt_metric_would_be_caught(scraped):
    """The data check above can fail: the same panel query with a wrong metric name returns no series."""
    expr = interpolate(panel_queries(DEFAULT_SERVICE_LABELS)[1][0][1], DEFAULT_SERVICE_LABELS)
    body = _query_range(scraped, expr.replace("mistral_requests_total", "mistral_request_total"))
    assert body["status"] == "success" and body["data"]["result"] == []


# ---- the alerts' dashboard link -----------------------------------------------------------------------------
def test_alert_dashboard_link_opens_this_dashboard_on_the_alerting_service(require_binary, tmp_path):
    promtool = require_binary("promtool")
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    variables = [v["name"] for v in _dashboard()["templating"]["list"]]
    for rule in rules:
        link = urlsplit(rule["annotations"]["dashboard"])
        assert link.path == f"/d/{DASHBOARD_UID}"
        assert [k.removeprefix("var-") for k in parse_qs(link.query, keep_blank_values=True)] == variables[1:]
    # the real promtool expands the template for a service whose labels need escaping in a URL
    (tmp_path / "rules.yml").write_text(render_rules())
    (tmp_path / "t.yml").write_text(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
        "      - series: 'mistral_requests_total{cluster=\"eu west\",namespace=\"a&b\",service=\"c/d\",code=\"503\"}'\n"
        "        values: '0+10x10'\n"
        "      - series: 'mistral_errors_total{cluster=\"eu west\",namespace=\"a&b\",service=\"c/d\",code=\"503\"}'\n"
        "        values: '0+10x10'\n"
        "    alert_rule_test:\n      - eval_time: 10m\n        alertname: MistralServerErrors\n        exp_alerts:\n"
        "          - exp_labels: {severity: page, error_class: provider_error, cluster: eu west, namespace: a&b, "
        "service: c/d}\n            exp_annotations:\n"
        "              summary: \"100% of Mistral calls get 5xx\"\n"
        f"              description: {json.dumps(rules[2]['annotations']['description'])}\n"
        "              runbook: diagnose_server_error\n"
        f"              runbook_url: {rules[2]['annotations']['runbook_url']}\n"
        "              dashboard: \"https://grafana.example.com/d/mistral-integration?var-cluster=eu+west"
        "&var-namespace=a%26b&var-service=c%2Fd\"\n")
    out = subprocess.run([promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr


def test_rules_without_a_dashboard_url_have_no_dashboard_annotation(require_binary, tmp_path):
    path = tmp_path / "rules.yml"
    out = subprocess.run([str(RUNBOOK), "rules", "--dashboard-url", "", "-o", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all("dashboard" not in r["annotations"] for r in yaml.safe_load(path.read_text())["groups"][0]["rules"])
    assert render_rules(RulesConfig(dashboard_url="")) == path.read_text()
    bad = subprocess.run([str(RUNBOOK), "rules", "--dashboard-url", "grafana.local/d/x"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--dashboard-url" in bad.stderr


# ---- annotations ----------------------------------------------------------------------------------------------
INDEX = {"id": "INC-7", "status": "resolved", "severity": "P2", "error_class": "rate_limited",
         "verdict": "P2 rate limited -> diagnose_rate_limit", "started_at": "2026-11-23T10:00:52Z",
         "mitigated_at": "2026-11-23T10:04:10.250Z", "resolved_at": "2026-11-23T10:09:00Z",
         "changes_applied": [{"action": "set env", "target": "deployment/chat -n prod", "at": "2026-11-23T10:03:00Z"}]}


@pytest.fixture
def token(monkeypatch) -> str:
    value = "glsa_" + secrets.token_urlsafe(24)
    monkeypatch.setenv("GRAFANA_TOKEN", value)
    return value


@pytest.fixture
def grafana(token):
    with FakeServer(grafana_app(token, {DASHBOARD_UID})) as server:
        yield server


@pytest.fixture
def incident(tmp_path) -> Path:
    folder = tmp_path / "outputs" / "20261123T100052Z-INC-7"
    folder.mkdir(parents=True)
    write_index(folder, dict(INDEX))
    return folder


def _ms(iso: str) -> int:
    from runbook_lib._time import parse

    return int(parse(iso).timestamp() * 1000)


def _assert_no_token(token: str, *texts: str) -> None:
    forms = (token, base64.b64encode(token.encode()).decode(), token[5:])
    for text in texts:
        for form in forms:
            assert form not in text


def test_dry_run_sends_nothing_and_records_the_equivalent_command(grafana, incident, token):
    target = grafana_target(grafana.url)
    entries = annotate_incident(incident, target, operator="alice")
    assert [e["event"] for e in entries] == ["detection", "mitigation", "resolution"]
    assert grafana.requests == []
    assert all(not e["applied"] and e["error"] is None and "$GRAFANA_TOKEN" in e["command"] for e in entries)
    assert entries[1]["body"]["time"] == _ms("2026-11-23T10:04:10.250Z")
    index = read_index(incident)
    assert index["grafana_annotations"] == entries
    _assert_no_token(token, (incident / "incident.json").read_text(), json.dumps(entries))


def test_approved_annotations_are_posted_verified_not_repeated_and_undone(grafana, incident, token):
    target = grafana_target(grafana.url)
    entries = annotate_incident(incident, target, apply_changes=True, operator="alice")
    assert [(e["applied"], e["verified"], e["error"]) for e in entries] == [(True, True, None)] * 3
    assert {e["identity"] for e in entries} == {"sa-1-mistral-runbooks"}
    store = grafana.annotations
    assert sorted(a["time"] for a in store.values()) == [_ms(INDEX["started_at"]), _ms(INDEX["mitigated_at"]),
                                                         _ms(INDEX["resolved_at"])]
    for a in store.values():
        assert a["dashboardUID"] == DASHBOARD_UID and a["tags"][:2] == ["mistral-runbooks", "incident:INC-7"]
    assert "set env on deployment/chat -n prod" in store[2]["text"]
    posts = [r for r in grafana.requests if r.method == "POST"]
    assert len(posts) == 3 and all(r.headers["Authorization"] == f"Bearer {token}" for r in posts)
    # a second approval posts nothing new
    again = annotate_incident(incident, target, apply_changes=True, operator="bob")
    assert [e["applied"] for e in again] == [False] * 3 and all("already posted" in e["note"] for e in again)
    assert len([r for r in grafana.requests if r.method == "POST"]) == 3
    # the recorded undo, run by the real curl with the token from the environment, deletes the annotation
    undo = entries[0]["undo"]
    assert undo.startswith("curl") and "$GRAFANA_TOKEN" in undo
    done = subprocess.run(["bash", "-c", undo], capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert done.returncode == 0 and "Annotation deleted" in done.stdout, done.stdout + done.stderr
    assert sorted(store) == [2, 3]
    _assert_no_token(token, (incident / "incident.json").read_text(), json.dumps(entries + again))


def test_a_wrong_or_missing_token_is_reported_not_hidden(grafana, incident, token, monkeypatch):
    target = grafana_target(grafana.url)
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_wrong_" + secrets.token_urlsafe(8))
    entries = annotate_incident(incident, target, events=("detection",), apply_changes=True)
    assert entries[0]["applied"] is False and entries[0]["error"] == "HTTP 401: invalid API key"
    monkeypatch.delenv("GRAFANA_TOKEN")
    before = len(grafana.requests)
    entries = annotate_incident(incident, target, events=("detection",), apply_changes=True)
    assert "$GRAFANA_TOKEN is unset" in entries[0]["error"] and len(grafana.requests) == before
    assert grafana.annotations == {}


def test_only_the_moments_the_record_has_and_bad_options_named(tmp_path):
    assert list(incident_events({"id": "X", "started_at": "2026-11-23T10:00:52Z"})) == ["detection"]
    from runbook_lib.errors import ParameterError

    with pytest.raises(ParameterError, match="token_env"):
        grafana_target("http://127.0.0.1:3000", token_env="glsa_abc-def")
    with pytest.raises(ParameterError, match="grafana_url"):
        grafana_target("grafana:3000")


def test_runbook_annotate_cli_dry_run_then_apply(grafana, incident, token):
    base = [str(RUNBOOK), "annotate", incident.name, "--grafana-url", grafana.url, "--output-dir", str(incident.parent)]
    env = dict(os.environ)
    dry = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert dry.returncode == 0 and dry.stdout.count("DRY RUN") == 3 and grafana.requests == [], dry.stdout + dry.stderr
    done = subprocess.run(base + ["--apply-changes", "--operator", "alice"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.count("POSTED and verified") == 3, done.stdout + done.stderr
    assert len(grafana.annotations) == 3
    _assert_no_token(token, dry.stdout + dry.stderr + done.stdout + done.stderr,
                     (incident / "incident.json").read_text())
    assert re.search(r"undo: curl .*-X DELETE .*/api/annotations/1", done.stdout)


def test_grafana_as_a_notify_provider_annotates_each_moment_once(grafana, incident, token, monkeypatch):
    """Through notify.dispatch, as the runbooks' updates go: dry run unless approved, the incident's own times."""
    from dataclasses import replace

    from runbook_lib.grafana.provider import GrafanaAnnotations
    from runbook_lib.notify.base import Update, dispatch, log_entries

    monkeypatch.setenv("GRAFANA_URL", grafana.url)
    provider = GrafanaAnnotations()
    assert provider.configured().ok and provider.probe(5) == (True, "token accepted (as 'sa-1-mistral-runbooks')")
    update = Update(incident_id="INC-7", status="INVESTIGATING", level="P2", error_class="rate_limited",
                    internal="*P2*", external="Degraded", facts={"impact": "chat answers fail"}, record=str(incident))
    sent_requests = len(grafana.requests)  # the probe's GET
    dry = dispatch(update, [], approved=False, timeout_s=5, providers=[provider])
    assert [d.state() for d in dry] == ["DRY RUN"] and len(grafana.requests) == sent_requests
    assert dry[0].body["time"] == _ms(INDEX["started_at"]) and dry[0].headers["Authorization"].startswith(
        "Bearer $GRAFANA_TOKEN (sha256:")
    sent = dispatch(update, [], approved=True, timeout_s=5, providers=[provider])
    assert [d.state() for d in sent] == ["SENT"] and sent[0].response["id"] == 1
    history = log_entries(sent, update)
    assert dispatch(update, history, approved=True, timeout_s=5, providers=[provider]) == []  # once per moment
    resolved = dispatch(replace(update, status="RESOLVED"), history, approved=True, timeout_s=5, providers=[provider])
    assert [d.action for d in resolved] == ["annotate resolution"] and resolved[0].ok
    assert {a["tags"][2]: a["time"] for a in grafana.annotations.values()} == {
        "detection": _ms(INDEX["started_at"]), "resolution": _ms(INDEX["resolved_at"])}
    assert "chat answers fail" in grafana.annotations[1]["text"]
    _assert_no_token(token, json.dumps(log_entries(sent + resolved, update)), json.dumps(provider.configured().settings))
