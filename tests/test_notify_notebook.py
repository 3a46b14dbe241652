"""The diagnosis notebooks' "Tell people" cell, headless in a real kernel, with Slack and PagerDuty configured:
without approval both are dry runs whose exact requests are in the record with the credentials redacted
(nothing reaches either service); the Slack thread is posted (Block Kit, token never in the record) only
by an approved run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_support import PD_KEY, SLACK_TOKEN, configure, fixtures
from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook
fakes, clean_env = fixtures()


def test_diagnosis_tells_the_slack_thread_and_shows_the_page_it_would_send(cluster_stack, dead_port, run_runbook,
                                                                            fakes, monkeypatch):
    configure(monkeypatch, fakes, "slack", "pagerduty")
    result = run_runbook("diagnose_network", cluster_stack, mistral_url=f"http://127.0.0.1:{dead_port}",
                         timeout_s=1.0, service_health_url="", incident_id="INC-NB-1")
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    deliveries = {d["service"]: d for d in rec["notifications"]["deliveries"]}
    assert set(deliveries) == {"slack_api", "pagerduty"} and rec["notifications"]["approved"] is False
    slack, page = deliveries["slack_api"], deliveries["pagerduty"]
    assert not slack["sent"] and slack["headers"]["Authorization"].startswith("Bearer $SLACK_BOT_TOKEN (sha256:")
    assert slack["body"]["blocks"][0]["text"]["text"].startswith(":red_circle: P1 INCIDENT")
    assert not page["sent"] and page["body"]["payload"]["severity"] == "critical"  # P1: nothing connects
    assert page["body"]["dedup_key"] == "INC-NB-1" and page["body"]["routing_key"].startswith("$PAGERDUTY_ROUTING_KEY")
    assert fakes.of("slack") == [] and fakes.of("pagerduty") == []  # nobody was told without approval
    for path in Path(result.record_dir).rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8", "replace")
            assert PD_KEY not in text and SLACK_TOKEN not in text, path.name
