"""Issue 16, items 4 and 7: failures are retried with backoff while serve runs (counted, logged, in
/readyz), a read-only or full spool answers 503 + Retry-After, pathological JSON is a 400, and a
resolution is applied at once even while the incident's respond still runs. The real `runbook serve`;
the full and read-only disk is a real 64 KiB tmpfs (filled, then remounted read-only)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import (alert, fill_disk, folders, free_port, kill_respond_processes, metric, payload, post,
                           start_serve, stop, tiny_disk)  # noqa: F401 - tiny_disk is a fixture


def _ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=5)


def test_a_job_failing_on_a_full_disk_is_retried_and_finishes_when_space_returns(stack, tiny_disk, tmp_path):
    stack.set_mode("server_error", status=503)
    outputs, state = tmp_path / "outputs", tiny_disk / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = start_serve(outputs, stack, port, "--state-dir", str(state), log=log)
    try:
        assert post(url, payload(alert("d15c0001"))).json()["accepted"] == 1
        assert wait_until(lambda: len(folders(outputs)) == 1, 15)
        folder = folders(outputs)[0]
        assert wait_until(lambda: (read_index(folder) or {}).get("status") == "diagnosed", 120), read_index(folder)
        assert wait_until(lambda: not list((state / "spool").glob("*.json"))
                          and not list((state / "runs").glob("*.json")), 30)  # its files freed before we fill

        filler = fill_disk(tiny_disk, 4096)  # one page: the resolved notification's spool file, then nothing
        answer = post(url, payload(alert("d15c0001", status="resolved")))
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, (answer.text, log.read_text()[-2000:])
        # applying it needs a new incidents.json: ENOSPC; retried with backoff, counted, logged, not ready
        assert wait_until(lambda: metric(url, 'runbook_serve_job_failures_total{stage="handle"}') >= 2, 20)
        not_ready = _ready(url)
        assert not_ready.status_code == 503
        assert any("failing, retried with backoff" in p and "No space left on device" in p
                   for p in not_ready.json()["problems"]), not_ready.json()
        assert metric(url, "runbook_serve_spool_jobs") == 1.0
        assert metric(url, "runbook_serve_oldest_job_age_seconds") > 0
        assert "No space left on device; retrying in" in log.read_text()
        assert json.loads((state / "incidents.json").read_text())["d15c0001"]["state"] == "open"

        filler.unlink()  # space is back: the stuck job finishes without a restart
        assert wait_until(lambda: not list((state / "spool").glob("*.json")), 90), log.read_text()[-2000:]
        assert json.loads((state / "incidents.json").read_text())["d15c0001"]["state"] == "resolved"
        assert (read_index(folder) or {})["alert_state"] == "resolved"
        assert wait_until(lambda: _ready(url).status_code == 200, 10), _ready(url).text
        assert "done after" in log.read_text() and proc.poll() is None

        # read-only (the spool folder bound read-only onto itself: a filesystem with serve's lock file open
        # for writing cannot be remounted read-only): 503 + Retry-After, a log line and a metric
        spool = str(state / "spool")
        assert subprocess.run(["mount", "--bind", spool, spool]).returncode == 0
        assert subprocess.run(["mount", "-o", "remount,bind,ro", spool]).returncode == 0
        refused = post(url, payload(alert("d15c0002")))
        assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
        assert "Read-only file system" in refused.text and "Read-only file system" in log.read_text()
        assert metric(url, 'runbook_serve_webhooks_total{outcome="spool_error"}') == 1.0
        assert _ready(url).status_code == 503
        assert subprocess.run(["umount", spool]).returncode == 0  # writable again
        assert post(url, payload(alert("d15c0002"))).json()["accepted"] == 1
        assert stop(proc) == 0
    finally:
        stop(proc)
        kill_respond_processes(str(outputs))
        subprocess.run(["umount", str(state / "spool")], capture_output=True)  # if a check failed while bound
    assert [p.name for p in state.rglob("*.tmp")] == []


def test_resolution_is_applied_while_the_respond_still_runs(stack, tmp_path):
    """The respond hangs on the provider; the alert's resolution lands at once (not after --run-timeout)."""
    stack.set_mode("hang")
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(outputs, stack, port, "-p", "timeout_s", "60.0", "--workers", "1")
    try:
        assert post(url, payload(alert("7e570001"))).json()["accepted"] == 1
        assert wait_until(lambda: len(folders(outputs)) == 1, 15)
        folder = folders(outputs)[0]
        assert wait_until(lambda: (read_index(folder) or {}).get("status") == "running", 60)
        assert post(url, payload(alert("7e570001", status="resolved"))).json()["accepted"] == 1
        assert wait_until(lambda: (read_index(folder) or {}).get("alert_state") == "resolved", 15), read_index(folder)
        index = read_index(folder) or {}
        assert index["status"] == "running"  # the run goes on; respond ends it as resolved itself
        assert wait_until(lambda: json.loads((outputs / ".serve" / "incidents.json").read_text())
                          ["7e570001"]["state"] == "resolved", 10)
        assert metric(url, 'runbook_serve_alerts_total{action="resolved",status="resolved"}') == 1.0
        assert metric(url, "runbook_serve_runs_running") == 1.0
    finally:
        stop(proc)
        kill_respond_processes(str(outputs))


@pytest.mark.parametrize("body, text", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    (b'{"version": "4", "n": ' + b"7" * 4_301 + b"}", "Exceeds the limit"),
    (b'{"version": "4", "alerts": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", "nested too deep"),
])
def test_pathological_json_is_a_400_naming_the_problem(tmp_path, body, text):
    port = free_port()
    proc = start_serve(tmp_path / "outputs", None, port)
    try:
        answer = post(f"http://127.0.0.1:{port}", body)
        assert answer.status_code == 400 and text in answer.json()["error"], answer.text
        assert metric(f"http://127.0.0.1:{port}", 'runbook_serve_webhooks_total{outcome="rejected"}') == 1.0
    finally:
        assert stop(proc) == 0
