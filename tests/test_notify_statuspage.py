"""The status page through Atlassian Statuspage's REST API, against a local stand-in (HTTPS, aiohttp) that
checks the documented request shape: page id, `Authorization: OAuth <key>`, incident[status] and the
component statuses from their enums. Dry run unless approved; create, update, resolve the same incident.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from notify_support import SP_COMPONENTS, SP_KEY, SP_PAGE, configure, fixtures
from runbook_lib import record
from runbook_lib.notify import base
from runbook_lib.notify.statuspage import Statuspage
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.runbooks import comms, steps

fakes, clean_env = fixtures()
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def incident(tmp_path, monkeypatch):
    folder = tmp_path / "20261205T085900Z-INC-5"
    folder.mkdir()
    write_index(folder, {"id": "INC-5", "folder": str(folder), "severity": "P2", "error_class": "provider_error",
                         "status": "diagnosed", "notebooks": []})
    monkeypatch.chdir(folder)
    return folder


def _cfg(**overrides):
    values = dict(mistral_url="http://127.0.0.1:18080", api_key_env="MISTRAL_API_KEY", service_health_url="",
                  kubeconfig="", kube_context="", namespace="default", deployment="mistral-service", container="app",
                  timeout_s=5.0, apply_changes=False, operator="oncall", incident_id="INC-5",
                  incident_commander="alice", slack_webhook_env="SLACK_WEBHOOK_URL", affected_features="Chat")
    values.update(overrides)
    return steps.common_parameters(**values)


def _tell(level, status, **cfg):
    return steps.communicate(_cfg(**cfg), level=level, status=status, by="diagnose_server_error",
                             impact="Some AI requests fail (503)", action="Fallback model enabled")


def test_dry_run_shows_the_request_and_posts_nothing(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "statuspage")
    _tell("P2", "INVESTIGATING")
    assert fakes.of("statuspage") == []
    (d,) = record.LOCAL["notifications"]["deliveries"]
    assert (d["method"], d["url"]) == ("POST", f"{fakes.base}/v1/pages/{SP_PAGE}/incidents")
    assert d["headers"]["Authorization"].startswith("OAuth $STATUSPAGE_API_KEY (sha256:")
    inc = d["body"]["incident"]
    assert inc["status"] == "investigating" and inc["name"] and inc["deliver_notifications"] is True
    assert inc["components"] == {c: "partial_outage" for c in SP_COMPONENTS} and inc["impact_override"] == "major"
    assert "(to send: re-run with `apply_changes=True`)" in base.markdown([base.Delivery(**d)])


def test_create_update_resolve_one_incident_with_component_status(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "statuspage")
    _tell("P2", "INVESTIGATING", apply_changes=True)
    _tell("P1", "MITIGATING", apply_changes=True)
    comms.resolved_messages({**read_index(incident), "severity": "P1", "status": "resolved"}, folder=incident,
                            approved=True, now=NOW)
    seen = fakes.of("statuspage")
    assert [(s["method"], s["path"]) for s in seen] == [
        ("POST", f"/v1/pages/{SP_PAGE}/incidents"), ("PATCH", f"/v1/pages/{SP_PAGE}/incidents/inc0001"),
        ("PATCH", f"/v1/pages/{SP_PAGE}/incidents/inc0001")]
    assert all(s["headers"]["Authorization"] == f"OAuth {SP_KEY}" for s in seen)
    states = [(s["body"]["incident"]["status"], set(s["body"]["incident"]["components"].values())) for s in seen]
    assert states == [("investigating", {"partial_outage"}), ("identified", {"major_outage"}),
                      ("resolved", {"operational"})]
    page = fakes.incidents["inc0001"]
    assert page["status"] == "resolved" and page["updates"] == 3 and page["metadata"]["mistral_runbooks"]["incident_id"] == "INC-5"
    assert "service is restored" in seen[2]["body"]["incident"]["body"]
    log = [e for e in read_index(incident)["communications"] if e["channel"] == "statuspage" and e.get("sent")]
    assert [(e["action"], e["http_status"], e["response"]["id"]) for e in log] == [
        ("create", 201, "inc0001"), ("update", 200, "inc0001"), ("resolve", 200, "inc0001")]
    texts = [p.read_text("utf-8", "replace") for p in incident.rglob("*") if p.is_file()]
    assert texts and not any(SP_KEY in t for t in texts) and SP_KEY not in json.dumps(record.LOCAL)


def test_a_resolved_incident_is_not_reopened_a_new_episode_creates_a_new_one(fakes, monkeypatch):
    configure(monkeypatch, fakes, "statuspage")
    history = [{"channel": "statuspage", "sent": True, "ok": True, "response": {"id": "inc0009", "status": "resolved"}}]
    (d,) = Statuspage().plan(base.Update("INC-6", "INVESTIGATING", "P3", "network", "x", "Slow\nbody"), history)
    assert d.action == "create"
    assert Statuspage().plan(base.Update("INC-6", "RESOLVED", "P3", "network", "x", "Restored\nb"), []) == []


def test_refusals_and_rate_limits(fakes, monkeypatch):
    configure(monkeypatch, fakes, "statuspage")
    update = base.Update("INC-7", "INVESTIGATING", "P2", "network", "x", "Slow\nbody")
    fakes.throttle["statuspage"] = 1  # 420, Retry-After 0: retried
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[Statuspage(backoff_s=0.01)])
    assert d.ok and d.attempts == 2 and d.http_status == 201
    fakes.throttle["statuspage"] = 100
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[Statuspage(max_retries=2, backoff_s=0.01)])
    assert d.ok is False and d.attempts == 3 and d.http_status == 420
    fakes.throttle.clear()
    monkeypatch.setenv("STATUSPAGE_API_KEY", "another-key-value-123")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[Statuspage()])
    assert d.http_status == 401 and d.error == "Statuspage answered HTTP 401: Could not authenticate"
    monkeypatch.setenv("STATUSPAGE_API_KEY", SP_KEY)
    monkeypatch.setenv("STATUSPAGE_PAGE_ID", "otherpage")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[Statuspage()])
    assert d.http_status == 404


def test_the_stand_in_checks_the_documented_shape(fakes):
    url, auth = f"{fakes.base}/v1/pages/{SP_PAGE}/incidents", {"Authorization": f"OAuth {SP_KEY}"}
    import ssl

    verify = ssl.create_default_context(cafile=fakes.ca)
    ok = {"incident": {"name": "n", "status": "investigating", "components": {SP_COMPONENTS[0]: "major_outage"}}}
    assert httpx.post(url, json=ok, headers=auth, verify=verify).status_code == 201
    for bad in ({"incident": {"name": "n", "status": "down"}}, {"incident": {"status": "investigating"}},
                {"incident": {"name": "n", "components": {SP_COMPONENTS[0]: "broken"}}}, {"name": "n"}):
        assert httpx.post(url, json=bad, headers=auth, verify=verify).status_code == 422, bad
    assert httpx.post(url, json=ok, headers={"Authorization": f"Bearer {SP_KEY}"}, verify=verify).status_code == 401


def test_sending_stops_when_the_budget_is_used_up(fakes, monkeypatch):
    """A rate-limited service cannot hold the runbook: no retry waits past the budget, and what is left after
    it is recorded as not sent."""
    from runbook_lib.notify.pagerduty import PagerDuty

    configure(monkeypatch, fakes, "statuspage", "pagerduty")
    fakes.throttle["statuspage"], fakes.retry_after = 100, "1"
    update = base.Update("INC-8", "INVESTIGATING", "P2", "network", "x", "Slow\nbody")
    first, second = base.dispatch(update, [], approved=True, timeout_s=5, budget_s=2.5,
                                  providers=[Statuspage(max_retries=50), PagerDuty()])
    assert first.service == "statuspage" and first.ok is False and first.http_status == 420
    assert 2 <= first.attempts <= 3  # Retry-After 1 s: the waits that fit in 2.5 s
    assert second.service == "pagerduty" and not second.sent and "used up" in second.error
    assert fakes.of("pagerduty") == []


def test_the_budget_fits_the_run_bounds(monkeypatch):
    """Inside `runbook run` (cell bound and run deadline in the kernel's environment) the budget shrinks to fit."""
    import time

    from runbook_lib.runbooks.comms import notify_budget

    monkeypatch.delenv("RUNBOOK_CELL_TIMEOUT_S", raising=False)
    monkeypatch.delenv("RUNBOOK_RUN_DEADLINE", raising=False)
    assert notify_budget(5) == base.BUDGET_S
    monkeypatch.setenv("RUNBOOK_CELL_TIMEOUT_S", "40")
    assert notify_budget(5) == 25  # 40 - 5 - 10
    monkeypatch.setenv("RUNBOOK_RUN_DEADLINE", str(time.time() + 12))
    assert notify_budget(5) == 0  # the run ends first: nothing is sent, and the record says why
