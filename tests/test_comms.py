import json
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runbook_lib import record
from runbook_lib.errors import ParameterError, RunbookError
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.runbooks import comms, steps

NOW = datetime(2026, 11, 23, 10, 7, 30, tzinfo=UTC)


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    _Receiver.status = 200
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, _Receiver
    srv.shutdown()


@pytest.fixture(autouse=True)
def _shipped_templates(monkeypatch):
    monkeypatch.delenv(comms.TEMPLATES_ENV, raising=False)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)


@pytest.fixture
def incident(tmp_path, monkeypatch):
    """A tmp incident folder with an incident.json, as the run's working directory (headless runs)."""
    folder = tmp_path / "20261123T100052Z-INC-9"
    folder.mkdir()
    write_index(folder, {"id": "INC-9", "folder": str(folder), "severity": "P1", "error_class": "auth",
                         "status": "diagnosed", "notebooks": []})
    monkeypatch.chdir(folder)
    return folder


def _cfg(**overrides):
    """The diagnosis notebooks' shared parameters, validated the way the notebooks validate them."""
    values = dict(mistral_url="http://127.0.0.1:18080", api_key_env="MISTRAL_API_KEY", service_health_url="",
                  prometheus_url="", metrics_window="1m", kubeconfig="", kube_context="", namespace="default",
                  deployment="mistral-service", container="app", timeout_s=2.0, apply_changes=False,
                  operator="", incident_id="INC-9", incident_commander="", slack_webhook_env="SLACK_WEBHOOK_URL",
                  affected_features="Chat assistant, Document search")
    values.update(overrides)
    return steps.common_parameters(**values)


def _msgs(**kw):
    args = dict(level="P1", status="INVESTIGATING", impact="Users cannot use AI features", error_class="auth",
                action="Rotating the API key", commander="alice", affected=["Chat assistant"], now=NOW)
    args.update(kw)
    return comms.render(**args)


# -- what users are told matches the class and the severity ------------------------------------------------
@pytest.mark.parametrize("cls", comms.CLASSES)
def test_p1_says_unavailable_never_slower(cls):
    ext = _msgs(level="P1", error_class=cls).external
    assert ext.startswith("AI Features Unavailable")
    assert "unavailable" in ext and "slower" not in ext and "Degradation" not in ext


@pytest.mark.parametrize("cls,level,says,never", [
    ("auth", "P1", "every request to our AI provider is being refused", "slower"),
    ("rate_limit", "P2", "delayed or rejected", "unavailable"),
    ("rate_limit", "P3", "delayed or rejected", "unavailable"),
    ("provider_error", "P2", "errors at our AI provider", "unavailable"),
    ("network", "P2", "slower than usual", "unavailable"),
    ("network", "P3", "slower than usual", "unavailable"),
    ("network", "P1", "cannot reach our AI provider", "slower"),
    ("our_service", "P2", "our own service", "AI provider"),
    ("auth", "P4", "no expected impact", "unavailable"),
])
def test_external_text_per_class_and_level(cls, level, says, never):
    ext = _msgs(level=level, error_class=cls).external
    assert says in ext and never not in ext, ext


def test_status_changes_the_progress_line_and_resolved_says_restored():
    assert "Our team is investigating." in _msgs(status="INVESTIGATING").external
    assert "identified the cause" in _msgs(status="MITIGATING").external
    assert "working around the problem while our AI provider recovers" in _msgs(
        status="MITIGATING", error_class="provider_error").external
    resolved = _msgs(status="RESOLVED")
    assert resolved.external.startswith("AI Features Restored") and "restored" in resolved.external
    assert "were unavailable" in resolved.external and "Workaround" not in resolved.external
    assert resolved.next_update_utc is None and "Next update" not in resolved.internal


@pytest.mark.parametrize("status", comms.STATUSES)
@pytest.mark.parametrize("level", comms.LEVELS)
@pytest.mark.parametrize("cls", (*comms.CLASSES, "unknown"))
def test_every_combination_renders_clean_slack_mrkdwn(cls, level, status):
    m = _msgs(level=level, status=status, error_class=cls, impact="calls fail <401> & retry", workaround="retry")
    for text in (m.internal, m.external):
        assert "{{" not in text and "{%" not in text and "[" not in text and "\n\n\n" not in text
    # Slack mrkdwn: *bold* (one star), no Markdown **bold**, __, headings or [links](...)
    assert "**" not in m.internal and "__" not in m.internal and not re.search(r"^#", m.internal, re.MULTILINE)
    assert "*Status*: " + status in m.internal
    for line in m.internal.splitlines():
        assert line.count("*") % 2 == 0, line
    if status != "RESOLVED":
        assert "calls fail &lt;401&gt; &amp; retry" in m.internal  # Slack's control characters escaped
        assert m.internal.startswith(f"{comms.EMOJI[level]} {level} INCIDENT: Mistral AI Integration")


def test_cadence_and_affected_list():
    m = _msgs(affected=["Chat assistant", "Document search"])
    assert "*Next update*: 10:23 UTC (every 15 min for P1)" in m.internal and m.next_update_utc == "2026-11-23T10:23Z"
    assert "*Affected*: Chat assistant, Document search" in m.internal
    assert "- Chat assistant\n- Document search" in m.external and "Last updated: 2026-11-23 10:07 UTC" in m.external


def test_ic_from_commander_else_operator_said_to_be_only_that():
    assert "*IC*: @alice" in _msgs(commander="alice").internal
    assert "*IC*: @bob" in _msgs(commander="@bob").internal
    m = _msgs(commander="", operator="carol")
    assert "*IC*: carol (runbook operator; no incident commander named)" in m.internal
    assert "(unassigned)" not in m.internal
    assert "none named" in _msgs(commander="", operator="").internal


# -- templates: the team's folder, loud failures ---------------------------------------------------------
def test_runbook_templates_overrides_same_named_files_and_falls_back(tmp_path, monkeypatch):
    team = tmp_path / "team-templates"
    team.mkdir()
    (team / "statuspage.md.j2").write_text("{{ level }} on {{ affected|join(' + ') }}: {{ status|lower }}\n")
    monkeypatch.setenv(comms.TEMPLATES_ENV, str(team))
    m = _msgs(affected=["Chat", "Search"])
    assert m.external == "P1 on Chat + Search: investigating"
    assert m.internal.startswith(":red_circle: P1 INCIDENT")  # slack.md.j2 not overridden: the shipped one
    # wording alone: phrases.j2 is looked up in the team folder first too
    (team / "statuspage.md.j2").unlink()
    (team / "phrases.j2").write_text(
        (comms.SHIPPED_TEMPLATES / "phrases.j2").read_text().replace("Our AI-powered features are unavailable: "
                                                                     "every request", "Acme Chat is down: every request"))
    assert "Acme Chat is down" in _msgs().external


def test_typo_in_a_team_template_fails_naming_the_template(tmp_path, monkeypatch):
    team = tmp_path / "team"
    team.mkdir()
    (team / "slack.md.j2").write_text("{{ emoji }} {{ levle }} INCIDENT\n")
    monkeypatch.setenv(comms.TEMPLATES_ENV, str(team))
    with pytest.raises(RunbookError, match=r"slack\.md\.j2.*line 1.*UndefinedError.*'levle' is undefined"):
        _msgs()
    (team / "slack.md.j2").unlink()
    (team / "phrases.j2").write_text("{% macro users_now(error_class, level) %}{{ nope }}{% endmacro %}"
                                     "{% macro progress(c, s) %}x{% endmacro %}{% macro heading(l) %}h{% endmacro %}")
    with pytest.raises(RunbookError, match=r"phrases\.j2.*'nope' is undefined"):
        _msgs()


def test_templates_are_sandboxed(tmp_path, monkeypatch):
    team = tmp_path / "team"
    team.mkdir()
    (team / "statuspage.md.j2").write_text("{{ affected.__class__.__mro__ }}")
    monkeypatch.setenv(comms.TEMPLATES_ENV, str(team))
    with pytest.raises(RunbookError, match=r"statuspage\.md\.j2"):
        _msgs()


def test_runbook_templates_not_a_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(comms.TEMPLATES_ENV, str(tmp_path / "missing"))
    with pytest.raises(RunbookError, match="RUNBOOK_TEMPLATES"):
        _msgs()


def test_shipped_templates_are_package_data():
    from importlib.resources import files

    shipped = files("runbook_lib.runbooks") / "templates"
    assert {"slack.md.j2", "statuspage.md.j2", "phrases.j2"} <= {p.name for p in shipped.iterdir()}
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"runbook_lib.runbooks" = ["templates/*.j2"]' in pyproject and '"jinja2>=3.1,<4"' in pyproject


# -- the communications log ---------------------------------------------------------------------------------
def test_communicate_logs_both_drafts_in_incident_json(incident):
    value = steps.communicate(_cfg(incident_commander="alice"), level="P1", status="INVESTIGATING",
                              impact="Users cannot use AI features: the AI provider rejects our API key (401)",
                              action="Diagnosing the API key", by="diagnose_auth")
    assert value["error_class"] == "auth" and value["logged"] is True
    log = read_index(incident)["communications"]
    assert [(e["channel"], e["status"], e["severity"], e["by"]) for e in log] == [
        ("slack", "INVESTIGATING", "P1", "diagnose_auth"), ("statuspage", "INVESTIGATING", "P1", "diagnose_auth")]
    for entry in log:
        assert set(entry) >= {"at", "by", "channel", "status", "severity", "text", "file", "posted", "error"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["at"])
        assert not Path(entry["file"]).is_absolute() and "/" not in entry["file"]
        assert (incident / entry["file"]).read_text() == entry["text"] + "\n"
        assert entry["posted"] is False and entry["error"] is None  # no webhook configured: a draft only
    assert "unavailable" in log[1]["text"] and "slower" not in log[1]["text"]
    assert log[0]["ic"] == "@alice" and log[1]["affected"] == ["Chat assistant", "Document search"]
    # the latest draft per channel, for pasting, under the names the records always used
    assert (incident / "message-internal-slack.md").read_text() == log[0]["text"] + "\n"
    assert (incident / "message-external-statuspage.md").read_text() == log[1]["text"] + "\n"
    assert value["files"] == [log[0]["file"], log[1]["file"]]


def test_second_message_appends_and_never_overwrites(incident):
    cfg = _cfg()
    for status in ("INVESTIGATING", "MITIGATING", "MITIGATING"):
        steps.communicate(cfg, level="P2", status=status, impact="i", action="a", by="diagnose_rate_limit")
    log = read_index(incident)["communications"]
    assert [e["status"] for e in log] == ["INVESTIGATING"] * 2 + ["MITIGATING"] * 4
    assert len({e["file"] for e in log}) == 6 and all((incident / e["file"]).exists() for e in log)
    assert "delayed or rejected" in log[-1]["text"]
    index = read_index(incident)
    assert index["severity"] == "P1" and index["status"] == "diagnosed"  # nothing else in the index touched


def test_in_a_record_folder_without_incident_json_only_the_record_logs_it(tmp_path, monkeypatch):
    """`runbook run` runs the kernel in the record folder, which holds the notebook being run."""
    (tmp_path / "diagnose_network.ipynb").write_text("{}")
    monkeypatch.chdir(tmp_path)
    value = steps.communicate(_cfg(operator="bob"), level="P2", status="INVESTIGATING", impact="slow",
                              action="measuring", by="diagnose_network")
    assert not (tmp_path / "incident.json").exists() and value["logged"] is False
    assert record.LOCAL["communications"]["files"] == value["files"] and len(value["files"]) == 2
    for name in value["files"]:
        assert (tmp_path / name).exists()
    assert value["saved"] == "in the record folder"
    assert "slower than usual" in value["external"] and "unavailable" not in value["external"]
    assert "*IC*: bob (runbook operator; no incident commander named)" in value["internal"]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_kernel_that_cannot_know_its_output_folder_writes_nothing_and_says_why(tmp_path, monkeypatch):
    """Plain papermill runs the kernel in the caller's directory: no draft lands there."""
    monkeypatch.chdir(tmp_path)
    value = steps.communicate(_cfg(), level="P2", status="INVESTIGATING", impact="slow", action="measuring",
                              by="diagnose_network")
    assert _files(tmp_path) == set() and value["files"] == [] and value["logged"] is False
    assert "--inject-output-path" in value["saved"] and value["internal"] and value["external"]
    assert record.LOCAL["communications"]["saved"] == value["saved"]
    md = comms.record_markdown(comms.Messages(value["internal"], value["external"], None), value["slack"], [],
                               False, unsaved_reason=value["saved"])
    assert "**Not saved as files**" in md and "--inject-output-path" in md and value["internal"] in md


def test_the_tracked_runbooks_folder_never_gets_drafts(tmp_path, monkeypatch):
    """JupyterLab opened on notebooks/ runs the kernel there, beside diagnose_network.ipynb itself."""
    tracked = tmp_path / "notebooks"
    tracked.mkdir()
    (tracked / "diagnose_network.ipynb").write_text("{}")
    monkeypatch.setenv("RUNBOOK_NOTEBOOKS", str(tracked))
    monkeypatch.chdir(tracked)
    value = steps.communicate(_cfg(), level="P2", status="INVESTIGATING", impact="slow", action="measuring",
                              by="diagnose_network")
    assert _files(tracked) == {"diagnose_network.ipynb"} and value["files"] == []


def _papermill_output(path: Path, given: str) -> None:
    """What papermill writes at the output path before the kernel starts (the parts read here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [], "metadata": {"papermill": {
        "output_path": given, "parameters": {"PAPERMILL_OUTPUT_PATH": given}}}}))


def test_papermill_output_path_puts_drafts_beside_the_output_notebook(tmp_path, monkeypatch):
    cwd, out = tmp_path / "cwd", tmp_path / "records" / "out.ipynb"
    cwd.mkdir()
    _papermill_output(out, "../records/out.ipynb")  # relative, as typed: read from the kernel's folder
    monkeypatch.chdir(cwd)
    value = steps.communicate(_cfg(papermill_output_path="../records/out.ipynb"), level="P2",
                              status="INVESTIGATING", impact="slow", action="measuring", by="diagnose_network")
    assert _files(cwd) == set() and len(value["files"]) == 2
    assert _files(out.parent) == {"out.ipynb", "message-internal-slack.md", "message-external-statuspage.md",
                                  *value["files"]}
    assert value["saved"] == "beside the output notebook (`PAPERMILL_OUTPUT_PATH`)"


@pytest.mark.parametrize("given, written", [
    ("s3://bucket/out.ipynb", None),  # not a local file
    ("elsewhere/out.ipynb", None),  # no such notebook
    ("other.ipynb", "not-this-path.ipynb"),  # a papermill output, but written for another path
])
def test_an_output_path_that_is_not_this_runs_output_writes_nothing(tmp_path, monkeypatch, given, written):
    if written:
        _papermill_output(tmp_path / given, written)
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    folder, why = steps.record_folder(given, "diagnose_network")
    assert folder is None and given in why
    value = steps.communicate(_cfg(papermill_output_path=given), level="P2", status="INVESTIGATING",
                              impact="slow", action="measuring", by="diagnose_network")
    assert value["files"] == [] and _files(tmp_path) == before


def test_class_defaults_to_the_runbook_that_recorded_the_severity(incident):
    record.record("severity", {"level": "P2", "by": "diagnose_network"})
    value = steps.communicate(_cfg(), level="P2", status="INVESTIGATING", impact="slow", action="measuring")
    assert value["by"] == "diagnose_network" and value["error_class"] == "network"
    assert read_index(incident)["communications"][0]["by"] == "diagnose_network"


def test_affected_features_is_a_validated_shared_parameter():
    assert _cfg()["affected_features"] == "Chat assistant, Document search"
    assert steps.common_parameters(**{k: v for k, v in _cfg().items() if k != "affected_features"})[
        "affected_features"] == "AI-powered features"
    with pytest.raises(ParameterError, match="affected_features"):
        _cfg(affected_features="Chat\nSearch")
    with pytest.raises(ParameterError, match="affected_features"):
        _cfg(affected_features="  ")


# -- RESOLVED ---------------------------------------------------------------------------------------------
def test_resolved_messages_from_the_index_with_impact_window(incident):
    steps.communicate(_cfg(incident_commander="alice", affected_features="Chat assistant"), level="P1",
                      status="INVESTIGATING", impact="401", action="rotating", by="diagnose_auth")
    index = read_index(incident)
    index["postmortem"] = {"impact_start": "2026-11-23T10:02:00Z", "impact_end": "2026-11-23 10:41:00+00:00",
                           "failed_requests": 1234, "markdown": str(incident / "postmortem.md")}
    index["changes_applied"] = [{"action": "rotate secret", "target": "default/mistral-secrets"}]
    write_index(incident, index)
    entries = comms.resolved_messages(read_index(incident), folder=incident, now=NOW)
    slack, page = entries
    assert [e["status"] for e in entries] == ["RESOLVED", "RESOLVED"] and slack["by"] == "postmortem"
    assert page["text"].startswith("AI Features Restored") and "restored" in page["text"]
    assert "From 10:02 to 10:41 UTC on 2026-11-23 (39 min), our AI-powered features were unavailable" in page["text"]
    assert "- Chat assistant" in page["text"]
    assert slack["text"].startswith(":white_check_mark: P1 INCIDENT RESOLVED")
    assert "*Impact window*: 10:02 to 10:41 UTC on 2026-11-23 (39 min)" in slack["text"]
    assert "*Measured*: 1,234 failed calls" in slack["text"] and "*IC*: @alice" in slack["text"]
    assert "rotate secret (default/mistral-secrets); postmortem: postmortem.md" in slack["text"]
    assert "**" not in slack["text"]
    log = read_index(incident)["communications"]
    assert len(log) == 4 and log[2:] == entries and all((incident / e["file"]).exists() for e in log)


def test_resolved_without_window_or_log_still_truthful(incident):
    index = {"id": "INC-9", "severity": "P2", "error_class": "network"}
    entries = comms.resolved_messages(index, folder=incident, operator="dave", now=NOW)
    assert "While the issue lasted, responses from our AI-powered features were slower" in entries[1]["text"]
    assert "not measured yet" in entries[0]["text"]
    assert "*IC*: dave (runbook operator; no incident commander named)" in entries[0]["text"]


# -- Slack webhook: URL from the environment only, outcome in the log --------------------------------------
def test_post_to_local_webhook_is_logged_without_the_url(receiver, monkeypatch, incident):
    srv, handler = receiver
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    value = steps.communicate(_cfg(apply_changes=True), level="P1", status="INVESTIGATING", impact="down", action="a",
                              by="diagnose_auth")
    assert value["slack"]["posted"] and handler.received[0]["text"].startswith(":red_circle: P1")
    slack, page = read_index(incident)["communications"]
    assert slack["posted"] is True and slack["error"] is None and page["posted"] is False
    assert handler.received[0]["text"] == slack["text"]
    assert url not in json.dumps(value) and url not in (incident / "incident.json").read_text()


def test_failed_post_is_logged_as_the_error_not_raised(receiver, monkeypatch, incident):
    srv, handler = receiver
    handler.status = 500
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{srv.server_address[1]}/hook")
    steps.communicate(_cfg(apply_changes=True), level="P1", status="INVESTIGATING", impact="down", action="a", by="diagnose_auth")
    slack = read_index(incident)["communications"][0]
    assert slack["posted"] is False and slack["error"] == "webhook answered HTTP 500: ok"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    result = comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL", 1, approved=True)
    assert not result["posted"] and "unreachable" in result["error"] and "127.0.0.1" not in result["error"]
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    result = comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL")
    assert "not set" in result["reason"] and result["error"] is None


def test_without_approval_a_configured_webhook_gets_nothing_and_the_shown_curl_posts_the_same(receiver, monkeypatch,
                                                                                             incident):
    """Slack is told only with the runbook's approval; the dry run shows the exact request, which the
    real curl sends (the URL, the credential, from its variable) byte for byte as slack_sdk would."""
    import shutil
    import subprocess

    from runbook_lib.notify.slack import post_webhook

    srv, handler = receiver
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    value = steps.communicate(_cfg(), level="P1", status="INVESTIGATING", impact="down", action="a",
                              by="diagnose_auth")
    assert handler.received == []  # nothing posted
    assert value["slack"]["posted"] is False and value["slack"]["dry_run"] is True and value["slack"]["error"] is None
    assert "apply_changes=True" in value["slack"]["reason"]
    slack = read_index(incident)["communications"][0]
    assert slack["posted"] is False and slack["dry_run"] is True
    assert record.LOCAL["notifications"]["approved"] is False
    command = value["slack"]["command"]
    assert url not in command and url not in json.dumps(value) and url not in (incident / "incident.json").read_text()
    assert shutil.which("curl"), "curl is installed by make install's system packages"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    (sent,) = handler.received
    assert post_webhook(value["internal"], "SLACK_WEBHOOK_URL", 2)["posted"]  # what approval would have sent
    by_sdk = handler.received[1]
    assert sent == by_sdk and sent["text"].startswith(":red_circle: P1") and sent["blocks"]
