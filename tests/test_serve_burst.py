"""Issue 16, proof 1: kill -9 of the real `runbook serve` during a burst, restart, Alertmanager's retries
(of what failed, and of some that were accepted but whose answer might have been lost): every
notification recorded exactly once, one respond per incident ever and never two at once (sampled from
/proc), all JSON valid, spool and run records empty at the end."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import (RespondWatcher, alert, folders, free_port, kill_respond_processes, metric, payload,
                           start_serve, stop)

SERVICES = 6


def _service_webhooks(s: int) -> list[dict[str, Any]]:
    """Per service: opening group (3 alerts), a re-notification (later startsAt), and for even ones the end."""
    def group(status: str, starts: str) -> dict[str, Any]:
        return payload(*[alert(f"b0{s:02x}{r:02x}", status=status, name=f"MistralServerErrors{r}", starts_at=starts,
                               cluster="c1", namespace=f"ns{s}", service=f"svc{s}") for r in range(3)],
                       group_key=f'{{}}:{{service="svc{s}"}}')
    hooks = [group("firing", "2026-11-23T10:00:00Z"), group("firing", "2026-11-23T10:01:00Z")]
    return hooks + ([group("resolved", "2026-11-23T10:00:00Z")] if s % 2 == 0 else [])


def test_kill_9_during_a_burst_then_restart_and_retries_record_everything_once(stack, tmp_path):
    stack.set_mode("server_error", status=503)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    plan = {s: _service_webhooks(s) for s in range(SERVICES)}
    answered: dict[tuple[int, int], int] = {}  # (service, webhook #) -> HTTP status, only when an answer came
    lock = threading.Lock()

    def send(s: int, i: int) -> None:
        try:
            code = httpx.post(f"{url}/webhook", content=json.dumps(plan[s][i]).encode(), timeout=10,
                              headers={"Content-Type": "application/json"}).status_code
        except httpx.HTTPError:
            return
        with lock:
            answered[(s, i)] = code

    def burst(s: int) -> None:
        for i in range(len(plan[s])):
            send(s, i)
            time.sleep(0.05)

    try:
        with RespondWatcher(str(outputs)) as watch:
            proc = start_serve(outputs, stack, port)
            senders = [threading.Thread(target=burst, args=(s,)) for s in range(SERVICES)]
            for t in senders:
                t.start()
            total = sum(len(v) for v in plan.values())
            assert wait_until(lambda: len(answered) >= total // 2, 30)
            proc.send_signal(signal.SIGKILL)  # mid-burst: some webhooks never get an answer
            proc.wait(10)
            for t in senders:
                t.join(30)
            lost = [(s, i) for s in plan for i in range(len(plan[s])) if answered.get((s, i)) != 200]
            assert lost, "the kill came after the burst: nothing was cut short"

            proc = start_serve(outputs, stack, port)
            # Alertmanager retries what got no 200, in order per group, and (answer lost?) some that did
            for s, i in sorted(lost):
                send(s, i)
            resent_ok = [(s, i) for s, i in sorted(answered) if (s, i) not in lost][:4]
            for s, i in resent_ok:
                send(s, i)
            assert all(answered[k] == 200 for k in answered), answered
            assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0
                              and metric(url, "runbook_serve_runs_running") == 0
                              and metric(url, "runbook_serve_runs_queued") == 0, 180)
            assert stop(proc) == 0
    finally:
        kill_respond_processes(str(outputs))

    incidents = folders(outputs)
    assert len(incidents) == SERVICES  # one per service: no second incident from a replay or a retry
    seen: dict[str, int] = {}
    for folder in incidents:
        index = json.loads((folder / "incident.json").read_text())  # valid JSON
        assert index["status"] in ("diagnosed", "resolved"), index
        for fp, h in index["alert_history"].items():
            seen[fp] = h["notifications"]
    expected = {a["fingerprint"]: 0 for hooks in plan.values() for hook in hooks for a in hook["alerts"]}
    for hooks in plan.values():
        for hook in hooks:
            for a in hook["alerts"]:
                expected[a["fingerprint"]] += 1
    assert seen == expected  # every notification exactly once
    for s in range(0, SERVICES, 2):
        index = next(read_index(f) for f in incidents if (read_index(f) or {}).get("service", {}).get("service")
                     == f"svc{s}")
        assert index["alert_state"] == "resolved" and index["status"] == "resolved", index
    # respond: exactly one process per incident folder, ever, and never two at once
    assert sorted(watch.folders()) == sorted(str(f) for f in incidents), watch.seen
    assert watch.most_at_once == 1
    for folder in incidents:  # and each finished once: respond prints its incident line at its end
        assert (folder / "respond.log").read_text().count("incident: ") == 1, folder
    state = outputs / ".serve"
    json.loads((state / "incidents.json").read_text())
    assert not list((state / "spool").iterdir()) and not list((state / "runs").glob("*.json"))
