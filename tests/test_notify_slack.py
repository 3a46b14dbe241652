"""Slack through the official slack_sdk against a local Web API / webhook stand-in (HTTPS, aiohttp): Block Kit,
Slack mrkdwn (never Markdown `**bold**`), one thread per incident, each post in the communications log.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from notify_support import SLACK_CHANNEL, SLACK_TOKEN, WEBHOOK_PATH, blocks_error, configure, fixtures
from runbook_lib import record
from runbook_lib.notify import base
from runbook_lib.notify.slack import SlackWebApi, blocks, mrkdwn, post_webhook
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.runbooks import comms, steps

fakes, clean_env = fixtures()
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def incident(tmp_path, monkeypatch):
    folder = tmp_path / "20261205T085900Z-INC-77"
    folder.mkdir()
    write_index(folder, {"id": "INC-77", "folder": str(folder), "severity": "P1", "error_class": "auth",
                         "status": "diagnosed", "notebooks": []})
    monkeypatch.chdir(folder)
    return folder


def _cfg(**overrides):
    values = dict(mistral_url="http://127.0.0.1:18080", api_key_env="MISTRAL_API_KEY", service_health_url="",
                  kubeconfig="", kube_context="", namespace="default", deployment="mistral-service", container="app",
                  timeout_s=5.0, apply_changes=False, operator="oncall", incident_id="INC-77",
                  incident_commander="alice", slack_webhook_env="SLACK_WEBHOOK_URL", affected_features="Chat")
    values.update(overrides)
    return steps.common_parameters(**values)


def _tell(status, impact="Users cannot use AI features: key rejected (401) <for all>", **cfg):
    """The diagnoses' "Tell people" step, approved unless `apply_changes=False` is given."""
    cfg.setdefault("apply_changes", True)
    return steps.communicate(_cfg(**cfg), level="P1", status=status, by="diagnose_auth", impact=impact,
                             action="Rotating the key & restarting")


def _mrkdwn_texts(blocks_):
    return [b["text"]["text"] for b in blocks_ if b["type"] == "section"] + [
        e["text"] for b in blocks_ if b["type"] == "context" for e in b["elements"]]


def test_first_message_then_thread_replies_and_resolved_in_the_same_thread(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "slack")
    _tell("INVESTIGATING")
    _tell("MITIGATING")
    comms.resolved_messages({**read_index(incident), "status": "resolved"}, folder=incident, approved=True, now=NOW)
    calls = [(s["method"], s["body"]) for s in fakes.of("slack")]
    assert [m for m, _ in calls] == ["chat.postMessage", "chat.postMessage", "chat.update", "chat.postMessage",
                                     "chat.update"]
    root = next(iter(fakes.messages))
    assert calls[0][1].get("thread_ts") is None and fakes.messages[root]["thread_ts"] is None
    assert calls[1][1]["thread_ts"] == root and calls[2][1]["ts"] == root
    assert calls[3][1]["thread_ts"] == root and calls[3][1]["reply_broadcast"] is True  # RESOLVED told the channel
    assert "RESOLVED" in calls[3][1]["text"] and fakes.messages[root]["edited"] and "RESOLVED" in fakes.messages[root]["text"]
    for s in fakes.of("slack"):
        assert s["headers"]["Authorization"] == f"Bearer {SLACK_TOKEN}" and s["body"]["channel"] == SLACK_CHANNEL
        assert blocks_error(s["body"]["blocks"]) is None
    log = [e for e in read_index(incident)["communications"] if e["channel"] == "slack_api"]
    assert [(e["action"], e["ok"], e["status"]) for e in log] == [
        ("post", True, "INVESTIGATING"), ("reply", True, "MITIGATING"), ("update", True, "MITIGATING"),
        ("reply", True, "RESOLVED"), ("update", True, "RESOLVED")]
    assert log[0]["response"]["ts"] == root and log[0]["request"]["headers"]["Authorization"].startswith(
        "Bearer $SLACK_BOT_TOKEN (sha256:")
    files = [p.read_text("utf-8", "replace") for p in incident.rglob("*") if p.is_file()]
    assert files and not any(SLACK_TOKEN in t for t in files) and SLACK_TOKEN not in json.dumps(record.LOCAL)


def test_escaped_mrkdwn_reaches_slack_and_no_markdown_bold(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "slack")
    _tell("INVESTIGATING", impact="Errors <500> & **timeouts** for [users](https://example.com/u)")
    body = fakes.of("slack")[0]["body"]
    section = _mrkdwn_texts(body["blocks"])[0]
    # Slack's control characters escaped, Markdown bold and links turned into mrkdwn
    assert "*Impact*: Errors &lt;500&gt; &amp; *timeouts* for <https://example.com/u|users>" in section
    assert "**" not in body["text"] and not any("**" in t for t in _mrkdwn_texts(body["blocks"]))
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                            "text": ":red_circle: P1 INCIDENT: Mistral AI Integration"}}


@pytest.mark.parametrize("status", comms.STATUSES)
def test_no_double_asterisk_in_any_message_even_from_a_markdown_team_template(tmp_path, monkeypatch, status):
    team = tmp_path / "templates"
    team.mkdir()
    (team / "slack.md.j2").write_text("**{{ status }}** {{ level }} incident\n**Impact**: {{ impact|slack }}\n"
                                      "See [the runbook](https://runbooks.example/x)\n")
    for with_team in (False, True):
        if with_team:
            monkeypatch.setenv(comms.TEMPLATES_ENV, str(team))
        for cls, level in itertools.product(comms.CLASSES, comms.LEVELS):
            msgs = comms.render(level=level, status=status, impact="**bad** & worse", action="a", error_class=cls)
            built = blocks(msgs.internal, "Incident `INC-1`")
            texts = [mrkdwn(msgs.internal)] + _mrkdwn_texts(built) + [built[0]["text"]["text"]]
            assert texts[0] and not any("**" in t for t in texts), texts
            assert blocks_error(built) is None
    assert "<https://runbooks.example/x|the runbook>" in mrkdwn(msgs.internal) and "*bad*" in mrkdwn(msgs.internal)


def test_long_messages_are_split_into_valid_sections():
    text = "Header line\n" + "\n".join(f"*Line {i}*: " + "x" * 200 for i in range(40))
    built = blocks(text)
    assert blocks_error(built) is None and len(built) > 2
    assert "".join(_mrkdwn_texts(built)).count("*Line ") == 40


def test_webhook_gets_text_and_blocks_without_the_url_in_the_log(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "webhook")
    value = _tell("INVESTIGATING")
    (hook,) = fakes.of("webhook")
    assert value["slack"]["posted"] and blocks_error(hook["body"]["blocks"]) is None
    assert hook["body"]["text"].startswith(":red_circle: P1 INCIDENT")
    everything = (incident / "incident.json").read_text() + json.dumps(record.LOCAL)
    assert WEBHOOK_PATH not in everything
    result = post_webhook("*x*", "NO_SUCH_WEBHOOK_ENV", 2)
    assert result == {"posted": False, "reason": "$NO_SUCH_WEBHOOK_ENV is not set: message not posted (saved to files)",
                      "error": None}


def test_with_the_web_api_configured_the_webhook_is_not_posted_twice(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "webhook", "slack")
    value = _tell("INVESTIGATING")
    assert fakes.of("webhook") == [] and len(fakes.of("slack")) == 1
    assert "thread" in value["slack"]["reason"]


def test_refusals_are_the_delivery_error(fakes, monkeypatch):
    configure(monkeypatch, fakes, "slack")
    monkeypatch.setenv("SLACK_CHANNEL", "C0WRONG")
    update = base.Update("INC-1", "INVESTIGATING", "P2", "network", "*P2* slow", "x")
    (d,) = base.dispatch(update, [], approved=False, timeout_s=5, providers=[SlackWebApi()])
    assert d.sent and d.ok is False and d.error == "Slack answered HTTP 200: channel_not_found"
    monkeypatch.setenv("SLACK_CHANNEL", SLACK_CHANNEL)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong-token-value")
    (d,) = base.dispatch(update, [], approved=False, timeout_s=5, providers=[SlackWebApi()])
    assert d.ok is False and d.error.endswith("invalid_auth") and "xoxb-wrong" not in json.dumps(d.to_dict())


def test_rate_limited_post_is_retried_by_the_sdk_and_bounded(fakes, monkeypatch):
    configure(monkeypatch, fakes, "slack")
    fakes.throttle["slack"] = 1
    update = base.Update("INC-2", "INVESTIGATING", "P2", "network", "*P2* slow\nmore", "x")
    (d,) = base.dispatch(update, [], approved=False, timeout_s=5, providers=[SlackWebApi(max_retries=2)])
    assert d.ok and len(fakes.of("slack")) == 2
    fakes.reset()
    fakes.throttle["slack"] = 100
    (d,) = base.dispatch(update, [], approved=False, timeout_s=5, providers=[SlackWebApi(max_retries=2)])
    assert d.ok is False and d.http_status == 429 and len(fakes.of("slack")) == 3


def test_without_approval_neither_the_thread_nor_the_webhook_is_told(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "slack")
    _tell("INVESTIGATING", apply_changes=False)
    assert fakes.of("slack") == []
    log = [e for e in read_index(incident)["communications"] if e["channel"] == "slack_api"]
    assert [(e["action"], e["sent"], e["approved"]) for e in log] == [("post", False, False)]
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    configure(monkeypatch, fakes, "webhook")
    value = _tell("INVESTIGATING", apply_changes=False)
    assert fakes.of("webhook") == [] and value["slack"]["dry_run"] and "SLACK_WEBHOOK_URL" in value["slack"]["command"]


def test_the_postmortem_waits_for_approval_even_for_slack(fakes, monkeypatch, incident):
    configure(monkeypatch, fakes, "slack")
    _tell("INVESTIGATING")
    comms.resolved_messages({**read_index(incident), "status": "resolved"}, folder=incident, now=NOW)
    assert len(fakes.of("slack")) == 1  # the RESOLVED reply and update are dry runs
    log = [e for e in read_index(incident)["communications"] if e["channel"] == "slack_api"]
    assert [(e["action"], e["sent"]) for e in log] == [("post", True), ("reply", False), ("update", False)]
