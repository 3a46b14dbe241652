"""Issue 16, item 6: an incident's alert history is complete and compact, and `runbook show` says what
was kept. 50 alerts of one fault, each notified three times (150 notifications, over the log's 100)."""

from __future__ import annotations

import subprocess

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import BIN, alert, folders, free_port, kill_respond_processes, payload, post, start_serve, stop


def test_fifty_joined_alerts_notified_three_times_are_all_kept_and_show_says_what_was_dropped(stack, tmp_path):
    stack.set_mode("server_error", status=503)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fps = [f"4157{i:04x}" for i in range(50)]

    def one(i: int, **kw: str) -> dict:
        return alert(fps[i], name=f"MistralServerErrors{i:02d}", instance=f"inst-{i:02d}", **kw)

    try:
        proc = start_serve(outputs, stack, port)
        assert post(url, payload(*[one(i) for i in range(50)])).json()["accepted"] == 50
        assert post(url, payload(*[one(i, starts_at="2026-11-23T10:02:00Z") for i in range(50)])
                    ).json()["accepted"] == 50  # notified again (a later startsAt: not a retry)
        assert post(url, payload(*[one(i, status="resolved") for i in range(50)])).json()["accepted"] == 50
        assert wait_until(lambda: len(folders(outputs)) == 1
                          and (read_index(folders(outputs)[0]) or {}).get("notifications") == 150, 60)
        folder = folders(outputs)[0]
        assert wait_until(lambda: (read_index(folder) or {}).get("status") == "resolved", 120), read_index(folder)
        assert stop(proc) == 0
    finally:
        kill_respond_processes(str(outputs))
    index = read_index(folder) or {}
    history = index["alert_history"]
    assert sorted(history) == sorted(fps)  # complete: no alert vanished
    for i, fp in enumerate(fps):
        h = history[fp]
        assert (h["notifications"], h["firing"], h["resolved"], h["state"]) == (3, 2, 1, "resolved"), h
        assert h["labels"]["instance"] == f"inst-{i:02d}" and h["first_seen"] <= h["last_seen"]
        assert h["ends_at"] == "2026-11-23T10:05:00Z" and h["starts_at"] == "2026-11-23T10:00:00Z"
    log = index["alerts"]
    assert (len(log), index["alerts_dropped"], index["notifications"]) == (100, 50, 150)
    assert log[0]["fingerprint"] == fps[0] and log[0]["status"] == "firing"  # what opened it stays first
    assert {(a["fingerprint"], a["status"]) for a in log} == {(fp, s) for fp in fps for s in ("firing", "resolved")}
    text = (folder / "incident.json").read_text()
    assert text.count('"inst-07"') == 1  # labels once per alert, not once per notification
    shown = subprocess.run([str(BIN / "runbook"), "show", str(folder), "--output-dir", str(outputs)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "150 notification(s) of 50 alert(s); the log keeps 100 (50 older repeat(s) dropped" in shown.stdout, \
        shown.stdout
    assert "MistralServerErrors49" in shown.stdout  # joined by: every alert, from the complete history
