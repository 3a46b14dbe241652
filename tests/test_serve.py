"""`runbook serve`: payload validation, refusals, auth, dedup by fingerprint, resolution, restarts.

The server is the real one on a free port; the runs it starts are real `runbook respond`
processes against the embedded simulators. The end-to-end path from a real Prometheus and
Alertmanager is in test_alert_to_record.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook_lib.serve import alerts
from runbook_lib.records.incident import read_index
from runbook_lib.serve.server import AlertServer, ServeConfig
from runbook_lib.sim._http import wait_until

BIN = Path(sys.executable).parent


def alert(fp: str = "a1b2c3d4e5f60718", status: str = "firing", name: str = "MistralAuthFailures",
          **labels: str) -> dict[str, Any]:
    """A Mistral rule's alert; any other `name` is someone else's (no error_class, no runbook)."""
    ours = name.startswith("Mistral")
    return {"status": status, "labels": {"alertname": name, "severity": "page",
                                         **({"error_class": "auth"} if ours else {}), **labels},
            "annotations": {"summary": "Mistral calls are rejected with 401/403",
                            **({"runbook": "diagnose_auth"} if ours else {})},
            "startsAt": "2026-11-23T10:00:00Z",
            "endsAt": "2026-11-23T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fp}


def payload(*items: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    items = items or (alert(),)
    return {"version": "4", "groupKey": '{}:{alertname="MistralAuthFailures"}', "truncatedAlerts": 0,
            "status": status or items[0]["status"], "receiver": "runbook-serve", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": list(items)}


# -- payload validation (pure) ----------------------------------------------------------------

def test_parse_accepts_the_v4_payload():
    note = alerts.parse(json.dumps(payload(alert(), alert("ff00", name="Other"))).encode())
    assert note.status == "firing" and note.receiver == "runbook-serve" and len(note.alerts) == 2
    first = note.alerts[0]
    assert (first.fingerprint, first.name, first.error_class, first.runbook) == \
        ("a1b2c3d4e5f60718", "MistralAuthFailures", "auth", "diagnose_auth")
    assert alerts.is_mistral(first) and not alerts.is_mistral(note.alerts[1])


@pytest.mark.parametrize("body, field", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[]", "JSON object"),
    (json.dumps({**payload(), "version": "3"}).encode(), '"version"'),
    (json.dumps({**payload(), "status": "burning"}).encode(), '"status"'),
    (json.dumps({**payload(), "alerts": []}).encode(), '"alerts"'),
    (json.dumps({**payload(), "alerts": "x"}).encode(), '"alerts"'),
    (json.dumps(payload({**alert(), "fingerprint": "../../etc"})).encode(), "fingerprint"),
    (json.dumps(payload({**alert(), "fingerprint": 7})).encode(), "fingerprint"),
    (json.dumps(payload({**alert(), "labels": {"severity": "page"}})).encode(), "alertname"),
    (json.dumps(payload({**alert(), "labels": {"alertname": 5}})).encode(), "labels"),
    (json.dumps(payload({**alert(), "status": None}, status="firing")).encode(), "alerts[0].status"),
    (json.dumps(payload(*[alert(f"{i:x}") for i in range(alerts.MAX_ALERTS + 1)])).encode(), "at most"),
])
def test_parse_refuses_malformed_payloads_naming_the_field(body, field):
    with pytest.raises(alerts.PayloadError) as err:
        alerts.parse(body)
    assert field in str(err.value)


# -- the server --------------------------------------------------------------------------------

def _config(tmp_path: Path, stack: Any = None, **kw: Any) -> ServeConfig:
    parameters = {"prometheus_url": "", "timeout_s": 2.0, "monitor_max_s": 1.0,
                  "monitor_interval_s": 0.2}
    if stack is not None:
        parameters.update(mistral_url=stack.mistral_url, service_health_url=stack.service_health_url)
    return ServeConfig(port=0, output_dir=tmp_path / "outputs", workers=kw.pop("workers", 2),
                       warm=kw.pop("warm", 0),  # standbys: test_serve_warm
                       parameters={**parameters, **kw.pop("parameters", {})}, **kw)


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/webhook", content=data, timeout=10,
                      headers={"Content-Type": "application/json", **(headers or {})})


def _folders(tmp_path: Path) -> list[Path]:
    root = tmp_path / "outputs"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def _wait_index(folder: Path, pred, timeout_s: float = 90) -> dict[str, Any]:
    assert wait_until(lambda: pred(read_index(folder) or {}), timeout_s, 0.2), read_index(folder)
    return read_index(folder) or {}


def test_routes_refusals_and_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SERVE_TOKEN", "s3cret-token-value")
    with AlertServer(_config(tmp_path, max_body_bytes=4096, token_env="TEST_SERVE_TOKEN"),
                     log=open(os.devnull, "w")) as srv:
        url = srv.url
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        auth = {"Authorization": "Bearer s3cret-token-value"}
        cases = [
            (_post(url, payload()), 401, "credentials"),
            (_post(url, payload(), {"Authorization": "Bearer wrong"}), 401, "credentials"),
            (_post(url, b"{broken", auth), 400, "not JSON"),
            (_post(url, {**payload(), "version": "2"}, auth), 400, "version"),
            (_post(url, payload({**alert(), "fingerprint": "zz"}), auth), 400, "fingerprint"),
            (_post(url, b"x" * 5000, auth), 413, "4096 bytes"),
            (httpx.post(f"{url}/webhook", content=b"{}", headers={"Content-Type": "text/plain", **auth}), 415,
             "application/json"),
            (httpx.get(f"{url}/webhook"), 405, "POST"),
            (httpx.get(f"{url}/nope"), 404, "routes"),
        ]
        for response, code, text in cases:
            assert response.status_code == code, (code, response.text)
            assert text in response.text
        assert httpx.post(f"{url}/webhook", content=b"x", headers={"Content-Type": "application/json"}
                          ).headers["WWW-Authenticate"].startswith("Bearer")
        # basic auth with the token as password is accepted too (Alertmanager's basic_auth)
        basic = "Basic " + base64.b64encode(b"am:s3cret-token-value").decode()
        ok = _post(url, payload(alert(name="NotOurs")), {"Authorization": basic})
        assert ok.status_code == 200 and ok.json() == {"accepted": 0, "ignored": 1, "queued": 0}
        metrics = httpx.get(f"{url}/metrics").text
        assert 'runbook_serve_webhooks_total{outcome="unauthorized"} 3.0' in metrics
        assert 'runbook_serve_webhooks_total{outcome="too_large"} 1.0' in metrics
        assert "runbook_serve_runs_started_total 0.0" in metrics
        assert "runbook_serve_runs_queued 0.0" in metrics
        assert "runbook_serve_run_duration_seconds_count 0.0" in metrics
    assert _folders(tmp_path) == []  # nothing refused or ignored opened an incident
    assert list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json")) == []
    assert "s3cret-token-value" not in "".join(p.read_text() for p in (tmp_path / "outputs").rglob("*") if p.is_file())


def test_a_big_webhook_is_taken_whole_and_a_full_queue_answers_503_persisting_nothing(stack, tmp_path):
    """A webhook bigger than --queue-max is accepted whole while the queue is not full (issue 16: it was
    refused forever); once jobs wait, the next webhook gets 503 + Retry-After and nothing of it is kept."""
    stack.set_mode("auth_failure")
    config = _config(tmp_path, stack, queue_max=1, workers=1, correlate=False, grace_s=1.0)
    with AlertServer(config, log=open(os.devnull, "w")) as srv:
        response = _post(srv.url, payload(alert("aa01"), alert("aa02"), alert("aa03")))
        assert response.status_code == 200 and response.json()["accepted"] == 3
        response = _post(srv.url, payload(alert("aa04")))
        assert response.status_code == 503 and "queue full" in response.text
        assert response.headers["Retry-After"]
        spooled = [json.loads(p.read_text())["alert"]["fingerprint"]
                   for p in (tmp_path / "outputs" / ".serve" / "spool").glob("*.json")]
        assert "aa04" not in spooled and spooled  # the refused one was never written; the others wait


def test_firing_dedup_append_and_resolved(stack, tmp_path):
    """One incident per fingerprint; a repeat is appended; `resolved` marks it; another fingerprint is its own."""
    stack.set_mode("auth_failure")
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    with AlertServer(_config(tmp_path, stack), log=open(os.devnull, "w")) as srv:
        assert _post(srv.url, payload(alert("aaaa1111"))).status_code == 200
        # Alertmanager retrying that notification (same group key, fingerprint, status, times): not recorded again
        assert _post(srv.url, payload(alert("aaaa1111"))).json()["duplicates"] == 1
        later = {**alert("aaaa1111"), "startsAt": "2026-11-23T10:01:00Z"}  # another notification of it: appended
        assert _post(srv.url, payload(later)).status_code == 200
        assert wait_until(lambda: len(_folders(tmp_path)) == 1, 10)
        folder = _folders(tmp_path)[0]
        index = _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed")
                            and len(i.get("alerts", [])) == 2)
        assert index["status"] == "diagnosed", index
        assert index["error_class"] == "auth" and index["source"] == "alertmanager"
        assert index["alert"]["fingerprint"] == "aaaa1111" and index["id"].endswith("-aaaa1111")
        assert [n["name"] for n in index["notebooks"]] == ["triage", "diagnose_auth"]
        assert (folder / "triage.ipynb").exists() and (folder / "diagnose_auth.html").exists()

        assert _post(srv.url, payload(alert("aaaa1111", status="resolved"))).status_code == 200
        index = _wait_index(folder, lambda i: i.get("alert_state") == "resolved", 20)
        assert index["resolved"]["at"] == "2026-11-23T10:05:00Z" and index["resolved"]["by"] == "alertmanager"
        assert [a["status"] for a in index["alerts"]] == ["firing", "firing", "resolved"]
        # the lifecycle follows the alert: resolved, at the alert's end; the response's outcome stays readable
        assert index["status"] == "resolved" and index["resolved_at"] == "2026-11-23T10:05:00Z", index
        assert index["diagnosis"] and [n["status"] for n in index["notebooks"]] == ["succeeded", "succeeded"]
        # a resolved alert for a fingerprint never seen changes nothing
        assert _post(srv.url, payload(alert("bbbb2222", status="resolved"))).status_code == 200
        metrics_text = lambda: httpx.get(f"{srv.url}/metrics").text  # noqa: E731
        assert wait_until(lambda: 'runbook_serve_alerts_total{action="ignored",status="resolved"} 1.0'
                          in metrics_text(), 10)
        assert len(_folders(tmp_path)) == 1
        # the run's end is counted once respond exits, which may be just after its record says diagnosed
        assert wait_until(lambda: "runbook_serve_run_duration_seconds_count 1.0" in metrics_text(), 10)
        metrics = metrics_text()
        assert "runbook_serve_runs_started_total 1.0" in metrics
        assert "runbook_serve_runs_failed_total 0.0" in metrics
        assert "runbook_serve_run_duration_seconds_count 1.0" in metrics
        assert 'runbook_serve_alerts_total{action="appended",status="firing"} 1.0' in metrics
    state = json.loads((tmp_path / "outputs" / ".serve" / "incidents.json").read_text())
    assert state["aaaa1111"]["state"] == "resolved"
    assert list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json")) == []


def test_alerts_of_one_fault_share_one_incident_resolved_when_the_last_resolves(stack, tmp_path):
    """5xx fire two rules: the second alert joins the first's incident (one respond run); the incident
    stays firing until both resolve. With correlate off, each fingerprint is its own incident."""
    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    servers = alert("5e5e0001", name="MistralServerErrors", error_class="provider_error")
    ratio = alert("e7e70002", name="MistralErrorRateHigh", error_class="any")
    with AlertServer(_config(tmp_path, stack), log=open(os.devnull, "w")) as srv:
        assert _post(srv.url, payload(servers)).status_code == 200
        assert wait_until(lambda: len(_folders(tmp_path)) == 1, 10)
        folder = _folders(tmp_path)[0]
        _wait_index(folder, lambda i: i.get("status") == "running", 30)
        assert _post(srv.url, payload(ratio)).status_code == 200  # joins while respond runs
        index = _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed")
                            and len(i.get("alerts", [])) == 2)
        assert index["status"] == "diagnosed" and index["error_class"] == "provider_error", index
        assert [a["name"] for a in index["alerts"]] == ["MistralServerErrors", "MistralErrorRateHigh"]
        assert index["alert"]["name"] == "MistralServerErrors"  # what opened it
        assert len(_folders(tmp_path)) == 1

        assert _post(srv.url, payload(alert("5e5e0001", status="resolved", name="MistralServerErrors"))).status_code == 200
        metrics_text = lambda: httpx.get(f"{srv.url}/metrics").text  # noqa: E731
        assert wait_until(lambda: 'action="still_firing"' in metrics_text(), 10), metrics_text()
        assert (read_index(folder) or {})["alert_state"] == "firing"
        assert _post(srv.url, payload(alert("e7e70002", status="resolved", name="MistralErrorRateHigh"))).status_code == 200
        index = _wait_index(folder, lambda i: i.get("alert_state") == "resolved", 20)
        assert index["resolved"]["alert"] == "MistralErrorRateHigh"
        assert [a["status"] for a in index["alerts"]] == ["firing", "firing", "resolved", "resolved"]
        metrics = metrics_text()
        assert "runbook_serve_runs_started_total 1.0" in metrics
        assert 'runbook_serve_alerts_total{action="joined",status="firing"} 1.0' in metrics
        # the fault fires again after it was resolved (a new startsAt): a new incident
        assert _post(srv.url, payload({**ratio, "startsAt": "2026-11-23T11:00:00Z"})).json()["accepted"] == 1
        assert wait_until(lambda: len(_folders(tmp_path)) == 2, 10)
    state = json.loads((tmp_path / "outputs" / ".serve" / "incidents.json").read_text())
    assert state["e7e70002"]["id"] != index["id"]

    other = tmp_path / "per-alert"
    other.mkdir()
    with AlertServer(_config(other, stack, correlate=False), log=open(os.devnull, "w")) as srv:
        assert _post(srv.url, payload(servers, ratio)).status_code == 200
        assert wait_until(lambda: len(_folders(other)) == 2, 10)
        for folder in _folders(other):
            _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed"))
    assert sorted(read_index(f)["alert"]["name"] for f in _folders(other)) == ["MistralErrorRateHigh",
                                                                               "MistralServerErrors"]


def test_crash_between_folder_and_map_replays_into_that_folder_and_joint_resolves_all_land(stack, tmp_path):
    """A job spooled with the folder it was opening (serve died before recording it in the map) reuses
    that folder; two alerts of the incident resolving in one notification both land, and it is resolved."""
    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    outputs = tmp_path / "outputs"
    folder = outputs / "20261123T100000Z-INC-20261123T100000Z-abab0001"
    folder.mkdir(parents=True)  # made, then the crash: no index, no incidents.json entry
    spool = outputs / ".serve" / "spool"
    spool.mkdir(parents=True)
    first = alerts.parse(json.dumps(payload(alert("abab0001", name="MistralServerErrors",
                                                  error_class="provider_error"))).encode()).alerts[0]
    (spool / "00000000000000000001-deadbeef.json").write_text(json.dumps(
        {"alert": first.to_dict(), "received_at": "2026-11-23T10:00:00Z", "receiver": "runbook-serve",
         "opened": {"id": "INC-20261123T100000Z-abab0001", "folder": str(folder)}}))
    with AlertServer(_config(tmp_path, stack), log=open(os.devnull, "w")) as srv:
        index = _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed"))
        assert index["id"] == "INC-20261123T100000Z-abab0001" and index["status"] == "diagnosed", index
        assert _folders(tmp_path) == [folder]
        assert _post(srv.url, payload(alert("cdcd0002", name="MistralErrorRateHigh"))).status_code == 200
        _wait_index(folder, lambda i: len(i.get("alerts", [])) == 2, 10)
        both = payload(alert("abab0001", status="resolved", name="MistralServerErrors"),
                       alert("cdcd0002", status="resolved", name="MistralErrorRateHigh"))
        assert _post(srv.url, both).status_code == 200
        index = _wait_index(folder, lambda i: i.get("alert_state") == "resolved" and len(i["alerts"]) == 4, 20)
        assert sorted((a["fingerprint"], a["status"]) for a in index["alerts"][2:]) == [
            ("abab0001", "resolved"), ("cdcd0002", "resolved")]
        assert "runbook_serve_runs_started_total 1.0" in httpx.get(f"{srv.url}/metrics").text
    assert _folders(tmp_path) == [folder]


def test_run_timeout_kills_the_run_and_marks_it_failed(stack, tmp_path):
    stack.set_mode("hang")
    with AlertServer(_config(tmp_path, stack, run_timeout_s=6, parameters={"timeout_s": 60.0}),
                     log=open(os.devnull, "w")) as srv:
        t0 = time.monotonic()
        assert _post(srv.url, payload(alert("cccc3333"))).status_code == 200
        assert wait_until(lambda: len(_folders(tmp_path)) == 1, 10)
        index = _wait_index(_folders(tmp_path)[0], lambda i: i.get("status") == "failed", 40)
        assert time.monotonic() - t0 < 30
        assert "run timeout" in index["error"]
        assert wait_until(lambda: "runbook_serve_runs_failed_total 1.0" in httpx.get(f"{srv.url}/metrics").text, 5)


def _start_serve(tmp_path: Path, stack: Any, port: int) -> subprocess.Popen[bytes]:
    cmd = [str(BIN / "runbook"), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir", str(tmp_path / "outputs"),
           "-r", "mistral_url", stack.mistral_url, "-r", "service_health_url", stack.service_health_url,
           "-r", "prometheus_url", "", "-p", "timeout_s", "2.0",
           "-p", "monitor_max_s", "1.0", "--warm", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "ab"))
    ok = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200, 20)
    assert ok, (tmp_path / "serve.log").read_text()
    return proc


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGKILL)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(10)


def test_accepted_alerts_survive_a_crash_and_are_replayed(stack, tmp_path, dead_port):
    """SIGKILL serve right after it answered: the job is in the spool; the next start finishes it."""
    import socket

    stack.set_mode("rate_limited")
    assert stack.wait_for_service_status({"degraded", "down"}, timeout_s=10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _start_serve(tmp_path, stack, port)
    try:
        response = _post(f"http://127.0.0.1:{port}", payload(alert("dddd4444", name="MistralRateLimited",
                                                                    error_class="rate_limit")))
        assert response.status_code == 200 and response.json()["accepted"] == 1
    finally:
        _kill_tree(proc)  # no chance to finish: the run it started dies with it
    spooled = list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json"))
    assert len(spooled) == 1, "the accepted alert must be on disk when the answer went out"

    proc = _start_serve(tmp_path, stack, port)
    try:
        assert wait_until(lambda: len(_folders(tmp_path)) == 1, 15)
        folder = _folders(tmp_path)[0]
        index = _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed"), 90)
        assert index["status"] == "diagnosed" and index["error_class"] == "rate_limit", index
        assert wait_until(lambda: not list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json")), 10)
        assert "recovered from the spool" in (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert len(_folders(tmp_path)) == 1  # replay did not open a second incident


def test_shutdown_mid_run_leaves_the_job_spooled_and_the_next_start_finishes_it(stack, tmp_path):
    """A run cut short by a stop is not marked failed: it stays spooled and runs again in the same folder."""
    stack.set_mode("hang")
    config = _config(tmp_path, stack, grace_s=1.0, parameters={"timeout_s": 30.0})
    srv = AlertServer(config, log=open(os.devnull, "w")).start()
    try:
        assert _post(srv.url, payload(alert("eeee5555"))).status_code == 200
        assert wait_until(lambda: len(_folders(tmp_path)) == 1, 10)
        folder = _folders(tmp_path)[0]
        _wait_index(folder, lambda i: i.get("status") == "running", 30)
    finally:
        srv.close()
    assert (read_index(folder) or {})["status"] == "running"
    assert len(list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json"))) == 1

    stack.set_mode("auth_failure")
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    with AlertServer(_config(tmp_path, stack), log=open(os.devnull, "w")):
        index = _wait_index(folder, lambda i: i.get("status") in ("triaged", "diagnosed", "failed"), 90)
    assert index["status"] == "diagnosed" and index["error_class"] == "auth", index
    assert len(index["alerts"]) == 1  # the replayed notification is not recorded twice
    assert _folders(tmp_path) == [folder]
    assert list((tmp_path / "outputs" / ".serve" / "spool").glob("*.json")) == []
