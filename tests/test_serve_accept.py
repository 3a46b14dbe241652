"""Issue 16, item 3: a webhook is accepted whole or not at all, a retry of one already accepted is
recognised (also after a restart), and a webhook bigger than --queue-max is taken. The real
`runbook serve` process; a full disk is a real tmpfs of 64 KiB mounted for the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import (alert, fill_disk, folders, free_port, kill_respond_processes, metric, payload, post,
                           start_serve, stop, tiny_disk)  # noqa: F401 - tiny_disk is a fixture


def _done(folder: Path) -> bool:
    return (read_index(folder) or {}).get("status") in ("triaged", "diagnosed", "failed", "resolved")


def test_a_retry_is_recognised_across_a_restart_and_a_big_webhook_is_taken_whole(stack, tmp_path):
    stack.set_mode("server_error", status=503)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = start_serve(outputs, stack, port, "--queue-max", "5")
        # one service's fault, 40 alerts in one group: 8 times --queue-max, taken whole into an empty queue
        big = payload(*[alert(f"b16{i:05x}", name=f"MistralServerErrors{i}") for i in range(40)])
        answer = post(url, big).json()
        assert answer["accepted"] == 40 and "duplicates" not in answer, answer
        retry = post(url, big).json()  # Alertmanager retrying it
        assert (retry["accepted"], retry["duplicates"]) == (0, 40), retry
        assert wait_until(lambda: len(folders(outputs)) == 1
                          and len((read_index(folders(outputs)[0]) or {}).get("alerts", [])) == 40, 60)
        folder = folders(outputs)[0]
        assert wait_until(lambda: _done(folder), 120), read_index(folder)
        assert stop(proc) == 0

        proc = start_serve(outputs, stack, port, "--queue-max", "5")  # the memory of what was taken survives
        assert post(url, big).json()["duplicates"] == 40
        resolved = payload(alert("b1600000", status="resolved", name="MistralServerErrors0"))
        assert post(url, resolved).json()["accepted"] == 1
        assert post(url, resolved).json()["duplicates"] == 1
        assert wait_until(lambda: metric(url, 'runbook_serve_alerts_total{action="still_firing",status="resolved"}')
                          == 1.0, 20)
        assert metric(url, 'runbook_serve_alerts_total{action="retry",status="resolved"}') == 1.0
        assert metric(url, 'runbook_serve_alerts_total{action="retry",status="firing"}') == 40.0
        assert stop(proc) == 0
    finally:
        kill_respond_processes(str(outputs))
    index = read_index(folder) or {}
    fingerprints = [a["fingerprint"] for a in index["alerts"]]
    assert len(fingerprints) == 41 and len(set(fingerprints)) == 40  # 40 firing + 1 resolved, none twice
    assert folders(outputs) == [folder]
    assert not list((outputs / ".serve" / "spool").iterdir())


def test_a_full_disk_refuses_the_whole_webhook_with_503_and_leaves_no_temp_files(stack, tiny_disk, tmp_path):
    """State on a 64 KiB tmpfs, filled but 8 KiB: a webhook of 10 alerts (a 4 KiB page of tmpfs each) cannot
    be written: 503 + Retry-After, a log line and a metric; none of its alerts kept, no temporary file
    left. With the space back, the same webhook is accepted whole."""
    outputs = tmp_path / "outputs"
    state = tiny_disk / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    stack.set_mode("server_error", status=503)
    proc = start_serve(outputs, stack, port, "--state-dir", str(state), log=log)
    try:
        filler = fill_disk(tiny_disk, 8 * 1024)
        body = payload(*[alert(f"f{i:07x}", name="NotOurs", team="x" * 900) for i in range(10)])
        ours = payload(*[alert(f"f{i:07x}", name=f"MistralServerErrors{i}", pad="x" * 900) for i in range(10)])
        assert post(url, body).json()["ignored"] == 10  # others' alerts need no disk
        refused = post(url, ours)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] and "nothing was accepted" in refused.json()["error"]
        assert list((state / "spool").iterdir()) == []  # not one of the 10, and no temporary file
        assert metric(url, 'runbook_serve_webhooks_total{outcome="spool_error"}') == 1.0
        assert "cannot be written" in log.read_text() and "No space left on device" in log.read_text()
        filler.unlink()
        again = post(url, ours)
        assert again.status_code == 200 and again.json()["accepted"] == 10, again.text
    finally:
        stop(proc)
        kill_respond_processes(str(outputs))
    assert [p.name for p in state.rglob("*.tmp")] == []
