"""PagerDuty Events API v2 through the official `pagerduty` client, against a local receiver that validates
the v2 schema and answers as the service does (202, 400 with errors, 429).

The incident's life: a P2 trigger (dry run first, then approved), a raise to P1 (a second trigger
with the same dedup_key and a note), MITIGATING (acknowledge), RESOLVED from the postmortem step
(resolve). Each request is checked as the receiver got it; the routing key is in no record.
"""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime

import httpx
import pytest

from notify_support import PD_KEY, configure, fixtures, pd_errors
from runbook_lib import record
from runbook_lib.notify import base
from runbook_lib.notify.pagerduty import SEVERITY, SUMMARY_MAX, PagerDuty
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.runbooks import comms, steps

fakes, clean_env = fixtures()
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def incident(tmp_path, monkeypatch):
    folder = tmp_path / "20261205T085900Z-INC-42"
    folder.mkdir()
    write_index(folder, {"id": "INC-42", "folder": str(folder), "severity": "P2", "error_class": "rate_limit",
                         "status": "diagnosed", "notebooks": []})
    monkeypatch.chdir(folder)
    return folder


def _cfg(**overrides):
    values = dict(mistral_url="http://127.0.0.1:18080", api_key_env="MISTRAL_API_KEY", service_health_url="",
                  prometheus_url="", metrics_window="1m", kubeconfig="", kube_context="", namespace="default",
                  deployment="mistral-service", container="app", timeout_s=5.0, apply_changes=False,
                  operator="oncall", incident_id="INC-42", incident_commander="alice",
                  slack_webhook_env="SLACK_WEBHOOK_URL", affected_features="Chat assistant")
    values.update(overrides)
    return steps.common_parameters(**values)


def _tell(level, status, **cfg):
    return steps.communicate(_cfg(**cfg), level=level, status=status, by="diagnose_rate_limit",
                             impact="Some AI requests are rejected (429)", action="Queueing requests")


def _no_key_anywhere(folder):
    texts = [p.read_text("utf-8", "replace") for p in folder.rglob("*") if p.is_file()]
    assert texts and not any(PD_KEY in t for t in texts)
    assert PD_KEY not in json.dumps(record.LOCAL)


def test_dry_run_by_default_shows_the_exact_event_with_the_key_redacted(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "pagerduty")
    _tell("P2", "INVESTIGATING")
    assert fakes.of("pagerduty") == []  # nothing sent without approval
    (d,) = record.LOCAL["notifications"]["deliveries"]
    assert d["service"] == "pagerduty" and d["action"] == "trigger" and not d["sent"] and not d["approved"]
    assert d["url"] == f"{fakes.base}/v2/enqueue"
    assert d["body"]["routing_key"].startswith("$PAGERDUTY_ROUTING_KEY (sha256:")
    assert d["body"]["dedup_key"] == "INC-42" and d["body"]["payload"]["severity"] == "error"
    assert pd_errors({**d["body"], "routing_key": PD_KEY}, 1000) == []  # the shown event is a valid one
    (entry,) = [e for e in read_index(incident)["communications"] if e["channel"] == "pagerduty"]
    assert entry["sent"] is False and entry["approved"] is False and entry["severity"] == "P2"
    _no_key_anywhere(incident)


def test_incident_life_trigger_raise_acknowledge_resolve(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "pagerduty")
    monkeypatch.setenv("RUNBOOK_RECORD_URL", "https://runbooks.example/records")
    _tell("P2", "INVESTIGATING", apply_changes=True)
    _tell("P2", "INVESTIGATING", apply_changes=True)  # nothing new: no second event
    record.LOCAL["severity"] = {"level": "P1", "previous": "P2", "why": "every probe failed"}
    _tell("P1", "MITIGATING", apply_changes=True)
    index = read_index(incident)
    comms.resolved_messages({**index, "severity": "P1", "status": "resolved"}, folder=incident, approved=True,
                            now=NOW)
    events = [s["body"] for s in fakes.of("pagerduty")]
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"INC-42"} and {e["routing_key"] for e in events} == {PD_KEY}
    first, raised = events[0], events[1]
    assert first["payload"]["severity"] == "error" and raised["payload"]["severity"] == "critical"
    assert first["payload"]["custom_details"]["impact"] == "Some AI requests are rejected (429)"
    assert first["payload"]["custom_details"]["affected"] == ["Chat assistant"]
    assert "severity P2 -> P1: every probe failed" in raised["payload"]["custom_details"]["note"]
    assert first["links"] == [{"href": f"https://runbooks.example/records/{incident.name}/index.html",
                               "text": "Incident record INC-42"}]
    log = [e for e in read_index(incident)["communications"] if e["channel"] == "pagerduty"]
    assert [(e["action"], e["ok"], e["http_status"]) for e in log] == [
        ("trigger", True, 202), ("trigger", True, 202), ("acknowledge", True, 202), ("resolve", True, 202)]
    assert all(e["response"] == {"dedup_key": "INC-42"} for e in log)
    _no_key_anywhere(incident)


@pytest.mark.parametrize("level", ["P1", "P2", "P3", "P4"])
def test_severity_mapped_from_the_incident_level(fakes, monkeypatch, level):
    configure(monkeypatch, fakes, "pagerduty")
    update = base.Update("INC-7", "INVESTIGATING", level, "network", "x", "y", facts={"impact": "slow"})
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty()])
    assert d.ok and fakes.of("pagerduty")[-1]["body"]["payload"]["severity"] == SEVERITY[level]
    assert SEVERITY == {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}


def test_long_summary_and_huge_details_are_cut_to_the_documented_limits(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty")
    update = base.Update("INC-8", "INVESTIGATING", "P1", "auth", "x", "y",
                         facts={"impact": "i" * 5000, "log_excerpt": "L" * 700_000})
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty()])
    sent = fakes.of("pagerduty")[-1]
    assert d.ok and d.http_status == 202
    assert len(sent["body"]["payload"]["summary"]) == SUMMARY_MAX and len(sent["raw"].encode()) <= 512 * 1024


def test_400_is_the_delivery_error_in_the_services_words_never_the_key(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", PD_KEY[:-1])  # 31 characters: the service refuses it
    update = base.Update("INC-9", "INVESTIGATING", "P1", "auth", "x", "y")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty()])
    assert d.sent and d.ok is False and d.http_status == 400 and d.attempts == 1
    assert d.error == ("PagerDuty answered HTTP 400: Length of 'routing_key' is incorrect "
                       "(should be 32 characters)")
    assert PD_KEY[:-1] not in json.dumps(d.to_dict())


def test_429_is_retried_with_backoff_then_accepted(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty")
    fakes.throttle["pagerduty"] = 2
    update = base.Update("INC-10", "INVESTIGATING", "P2", "rate_limit", "x", "y")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty(backoff_s=0.01)])
    assert d.ok and d.attempts == 3 and len(fakes.of("pagerduty")) == 3


def test_429_retries_are_bounded(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty")
    fakes.throttle["pagerduty"] = 100
    update = base.Update("INC-11", "INVESTIGATING", "P2", "rate_limit", "x", "y")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty(max_retries=2, backoff_s=0.01)])
    assert d.ok is False and d.http_status == 429 and d.attempts == 3 and len(fakes.of("pagerduty")) == 3
    assert d.error.startswith("PagerDuty answered HTTP 429")


def test_unreachable_service_is_an_error_not_an_exception(monkeypatch):
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", PD_KEY)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", "https://127.0.0.1:9")
    update = base.Update("INC-12", "INVESTIGATING", "P2", "network", "x", "y")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=1, providers=[PagerDuty(backoff_s=0.01)])
    assert d.sent and d.ok is False and d.error.startswith("not delivered: Connect")
    assert PD_KEY not in json.dumps(d.to_dict())


def test_no_incident_id_sends_nothing_and_says_why(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty")
    update = base.Update("", "INVESTIGATING", "P2", "network", "x", "y")
    (d,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty()])
    assert not d.sent and "dedup_key is the incident id" in d.error and fakes.of("pagerduty") == []


def test_the_receiver_is_strict(fakes):
    """The stand-in refuses what the real service refuses (so the accepted events above prove something)."""
    good = {"routing_key": PD_KEY, "event_action": "trigger", "dedup_key": "x",
            "payload": {"summary": "s", "source": "src", "severity": "critical"}}
    bad = [{**good, "routing_key": "short"}, {**good, "event_action": "page"},
           {**good, "dedup_key": "d" * 256}, {**good, "payload": {**good["payload"], "severity": "high"}},
           {**good, "payload": {**good["payload"], "summary": "s" * 1025}},
           {**good, "payload": {"summary": "s", "severity": "info"}},
           {"routing_key": PD_KEY, "event_action": "resolve"},
           {**good, "payload": {**good["payload"], "custom_details": {"x": "y" * 530_000}}}]
    assert httpx.post(f"{fakes.base}/v2/enqueue", json=good, verify=ssl.create_default_context(cafile=fakes.ca)).status_code == 202
    for event in bad:
        r = httpx.post(f"{fakes.base}/v2/enqueue", json=event, verify=ssl.create_default_context(cafile=fakes.ca))
        assert r.status_code == 400 and r.json()["errors"], event.keys()


def test_the_integrations_credentials_are_refused_as_parameter_values(monkeypatch):
    """Their variables are named like secrets, so every notebook's first call refuses their values."""
    from runbook_lib.errors import ParameterError
    from runbook_lib.secrets import check_no_secret_values

    values = {"PAGERDUTY_ROUTING_KEY": PD_KEY, "SLACK_BOT_TOKEN": "xoxb-1-2-abcdefghijkl",
              "STATUSPAGE_API_KEY": "statuspage-key-0123456789"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name, value in values.items():
        with pytest.raises(ParameterError) as err:
            check_no_secret_values({"operator": f"me {value}"})
        assert name in str(err.value) and value not in str(err.value)
        monkeypatch.delenv(name)


def test_severity_change_is_also_a_note_on_the_pagerduty_incident(fakes, monkeypatch, incident):
    """With a REST token and a From email, the raise is written as a note on the incident PagerDuty opened."""
    from notify_support import PD_API_TOKEN

    configure(monkeypatch, fakes, "pagerduty", "pagerduty_notes")
    _tell("P2", "INVESTIGATING", apply_changes=True)
    assert [s for s in fakes.seen if s["service"] == "pagerduty_rest"] == []  # no change yet: no note
    record.LOCAL["severity"] = {"level": "P1", "previous": "P2", "why": "every probe failed"}
    _tell("P1", "INVESTIGATING", apply_changes=True)
    (opened,) = fakes.pd_incidents.values()
    (note,) = opened["notes"]
    assert opened["incident_key"] == "INC-42" and note["user"]["summary"] == "oncall@example.com"
    assert "severity P2 -> P1: every probe failed" in note["content"]
    rest = [s for s in fakes.seen if s["service"] == "pagerduty_rest"]
    assert [(s["method"], s["path"], s["query"]) for s in rest] == [
        ("GET", "/incidents", {"incident_key": "INC-42"}), ("POST", f"/incidents/{opened['id']}/notes", {})]
    assert all(s["headers"]["Authorization"] == f"Token token={PD_API_TOKEN}" for s in rest)
    (entry,) = [e for e in read_index(incident)["communications"] if e.get("action") == "note"]
    assert entry["ok"] and entry["response"] == {"incident": opened["id"], "note": "PNOTE1"}
    assert entry["request"]["url"].endswith(f"/incidents/{opened['id']}/notes")
    assert entry["request"]["headers"]["Authorization"].startswith("Token token=$PAGERDUTY_API_TOKEN (sha256:")
    texts = [p.read_text("utf-8", "replace") for p in incident.rglob("*") if p.is_file()]
    assert texts and not any(PD_API_TOKEN in t for t in texts)


def test_a_note_without_a_from_email_is_refused_by_the_service_in_its_words(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty", "pagerduty_notes")
    update = base.Update("INC-50", "INVESTIGATING", "P2", "network", "x", "y")
    base.dispatch(update, [], approved=True, timeout_s=5, providers=[PagerDuty()])
    history = [{"channel": "pagerduty", "sent": True, "ok": True, "action": "trigger", "severity": "P2",
                "status": "INVESTIGATING"}]
    monkeypatch.setenv("PAGERDUTY_FROM", "not-an-email")
    raised = base.Update("INC-50", "INVESTIGATING", "P1", "network", "x", "y")
    trigger, note = base.dispatch(raised, history, approved=True, timeout_s=5, providers=[PagerDuty()])
    assert trigger.ok and note.action == "note" and note.ok is False and note.http_status == 400
    assert "A valid 'From' header is required" in note.error


def test_the_postmortem_takes_its_approval_like_the_diagnoses(tmp_path):
    from runbook_lib.errors import ParameterError
    from runbook_lib.runbooks import postmortem

    with pytest.raises(ParameterError) as err:
        postmortem.start(source=str(tmp_path), min_error_ratio=0.05, min_errors=1, max_gap_steps=2,
                         apply_changes="yes")
    assert "apply_changes" in str(err.value) and "True or False" in str(err.value)
