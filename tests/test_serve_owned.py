"""Issue 16, items 1-2: one serve per state directory, and runs that survive a kill -9 of serve are
adopted by the next serve, never started twice. Real `runbook serve` processes, real SIGKILL, real
respond runs against the embedded simulators; the respond processes are counted from /proc."""

from __future__ import annotations

import json
import signal
import subprocess

import httpx
import psutil
import pytest

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import (RespondWatcher, alert, folders, free_port, kill_respond_processes, metric, payload, post,
                           serve_cmd, start_serve, stop)


def test_a_second_serve_on_one_state_directory_is_refused_naming_it_and_the_holder(tmp_path):
    outputs = tmp_path / "outputs"
    port, other = free_port(), free_port()
    first = start_serve(outputs, None, port)
    try:
        assert post(f"http://127.0.0.1:{port}", payload(alert("ab01", name="NotOurs"))).status_code == 200
        state_before = sorted(p.name for p in (outputs / ".serve").rglob("*"))
        second = subprocess.run(serve_cmd(outputs, None, other), capture_output=True, timeout=60)
        err = second.stderr.decode()
        assert second.returncode == 2, err
        assert str(outputs / ".serve") in err and f"pid {first.pid}" in err and "one serve per state directory" in err
        with pytest.raises(httpx.TransportError):  # it never listened
            httpx.get(f"http://127.0.0.1:{other}/healthz", timeout=2)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200  # the first is untouched
        assert sorted(p.name for p in (outputs / ".serve").rglob("*")) == state_before
        # a serve with its own --state-dir is another owner: allowed
        third = start_serve(outputs, None, other, "--state-dir", str(tmp_path / "other-state"),
                            log=tmp_path / "third.log")
        assert stop(third) == 0
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel drops a dead holder's lock: no stale lock after a crash
        first.wait(10)
    again = start_serve(outputs, None, other, log=tmp_path / "again.log")
    assert stop(again) == 0


def test_kill_9_mid_run_then_restart_adopts_the_run_one_respond_ever(stack, tmp_path):
    """One firing alert; serve is SIGKILLed while its respond runs (the run, in its own session, lives on);
    the restarted serve adopts that run: exactly one respond process for the folder ever, the incident
    completes, its outcome is recorded, the spool ends empty."""
    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    slow = ("-p", "monitor_max_s", "8.0")  # the recovery watch keeps the run going past the restart
    try:
        with RespondWatcher(str(outputs)) as watch:
            proc = start_serve(outputs, stack, port, *slow)
            assert post(url, payload(alert("a0a0a0a1"))).json()["accepted"] == 1
            assert wait_until(lambda: len(folders(outputs)) == 1, 15)
            folder = folders(outputs)[0]
            assert wait_until(lambda: (read_index(folder) or {}).get("status") == "running"
                              and len(watch.seen) == 1, 60), read_index(folder)
            proc.send_signal(signal.SIGKILL)  # serve only: its run is in another session
            proc.wait(10)
            (pid, _created), = watch.seen
            assert psutil.pid_exists(pid), "the run should outlive serve (own session)"
            assert (read_index(folder) or {}).get("status") == "running"

            proc = start_serve(outputs, stack, port, *slow)
            index = {}
            assert wait_until(lambda: (index := read_index(folder) or {}).get("status")
                              in ("diagnosed", "triaged", "failed"), 120), read_index(folder)
            assert wait_until(lambda: not list((outputs / ".serve" / "spool").glob("*.json")), 20)
            assert wait_until(lambda: metric(url, "runbook_serve_runs_adopted_total") == 1.0, 10)
            assert metric(url, "runbook_serve_runs_started_total") == 0.0  # this life started none
            assert stop(proc) == 0
        index = read_index(folder) or {}
        assert index["status"] == "diagnosed" and index["error_class"] == "provider_error", index
        assert len(watch.seen) == 1 and watch.most_at_once == 1, watch.seen
        assert watch.folders() == [str(folder)]
        # the respond's own output names its incident once: one run finished into this folder
        assert (folder / "respond.log").read_text().count("incident: ") == 1
        log = (tmp_path / "serve.log").read_text()
        assert f"respond pid {pid} from a previous serve still runs" in log and "adopting it" in log
        assert folders(outputs) == [folder]
        json.loads((outputs / ".serve" / "incidents.json").read_text())  # valid
        assert not list((outputs / ".serve" / "runs").glob("*.json"))  # outcome recorded, pid record dropped
    finally:
        kill_respond_processes(str(outputs))
