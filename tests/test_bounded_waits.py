"""A runbook's own long wait ends, with its verdict, before the cell and run bounds (issue 15).

The 5xx runbook's recovery monitor defaulted to 300 s, the same as papermill's default cell bound:
`respond --apply-changes` on a fault that never clears ended `timed_out` with no verdict. Now an
explicit `monitor_max_s` that cannot fit is refused before any kernel (naming it), and the default is
shortened inside the kernel to fit the bounds `runbook run`/`respond` hand it, and says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib import bounds
from runbook_lib.errors import ParameterError
from runbook_lib.record import read_records
from runbook_lib.run.execute import check_run_request
from runbook_lib.run.respond import check_respond_request

BIN = Path(sys.executable).parent
CLI = ("--cell-timeout", "--run-timeout")


def test_wait_room_leaves_the_last_probe_and_the_verdict_inside_the_cell():
    assert bounds.wait_room(300, 5.0) == 285
    assert bounds.wait_room(25, 2.0) == 13
    assert bounds.from_kernel({bounds.CELL_TIMEOUT_ENV: "25", bounds.RUN_DEADLINE_ENV: "x"}) == (25.0, None)
    assert bounds.run_room(1000.0, 2.0, now=900.0) == 88


@pytest.mark.parametrize("given, cell, run, name", [
    ({"monitor_max_s": 300.0}, 300, None, "monitor_max_s"),        # the old default against the default cell
    ({"monitor_max_s": 50, "timeout_s": 2.0}, 60, None, "monitor_max_s"),
    ({"monitor_max_s": 100}, 600, 100, "monitor_max_s"),           # longer than the whole run
    ({}, 12, None, "--cell-timeout"),                              # no room for any watch at all
])
def test_a_wait_that_cannot_end_in_a_verdict_is_refused_naming_it(given, cell, run, name):
    with pytest.raises(ParameterError) as exc:
        check_run_request("diagnose_server_error", given, strict_names=True, cell_timeout_s=cell,
                          run_timeout_s=run, flag_names=CLI)
    assert exc.value.name == name
    with pytest.raises(ParameterError) as exc:  # respond checks the same before triage starts
        check_respond_request(given, cell_timeout_s=cell, run_timeout_s=run)
    assert exc.value.name == name


def test_waits_that_fit_and_other_runbooks_are_accepted():
    assert check_run_request("diagnose_server_error", {"monitor_max_s": 285}, strict_names=True,
                             cell_timeout_s=300, flag_names=CLI) == 900
    check_run_request("diagnose_server_error", {}, strict_names=True, cell_timeout_s=30, flag_names=CLI)
    check_run_request("triage", {}, strict_names=True, cell_timeout_s=12, flag_names=CLI)  # no long wait
    check_respond_request({"monitor_max_s": 13, "timeout_s": 2.0}, cell_timeout_s=25)


def test_cli_respond_refuses_before_any_kernel(tmp_path):
    out = subprocess.run([str(BIN / "runbook"), "respond", "-q", "--output-dir", str(tmp_path), "--cell-timeout",
                          "60", "-p", "mistral_url", "http://127.0.0.1:9", "-p", "monitor_max_s", "300"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "parameter 'monitor_max_s' = 300 is invalid: expected at most 45 s with --cell-timeout 60" in out.stdout
    index = json.loads(next(tmp_path.glob("*/incident.json")).read_text())
    assert index["status"] == "failed" and not list(tmp_path.glob("*/*.ipynb"))


@pytest.mark.notebook
def test_respond_apply_changes_on_a_fault_that_never_clears_ends_with_a_verdict(cluster_stack, tmp_path):
    """`runbook respond --apply-changes --cell-timeout 25`, 5xx that never clears, default monitor_max_s.

    The default watch (240 s) cannot fit a 25 s cell: the kernel shortens it to 13 s (25 - timeout_s 2
    - 10), it ends "not recovered after 13 s", and the run is succeeded, not timed_out.
    """
    st = cluster_stack
    st.set_mode("server_error", status=503)
    out = subprocess.run([str(BIN / "runbook"), "respond", "-q", "--output-dir", str(tmp_path), "--apply-changes",
                          "--cell-timeout", "25", "--incident-id", "INC-BOUND", "-p", "mistral_url", st.mistral_url,
                          "-p", "service_health_url", st.service_health_url, "-p", "prometheus_url", "",
                          "-p", "kubeconfig", st.kubeconfig["ok"], "-p", "timeout_s", "2",
                          "-p", "monitor_interval_s", "1", "-r", "operator", "alice"],
                         capture_output=True, text=True, timeout=240)
    index = json.loads(next(tmp_path.glob("*/incident.json")).read_text())
    names = [(n["name"], n["status"]) for n in index["notebooks"]]
    assert names == [("triage", "succeeded"), ("diagnose_server_error", "succeeded")], (names, out.stderr[-2000:])
    folder = next(tmp_path.glob("*INC-BOUND"))
    run = json.loads((folder / "diagnose_server_error.run.json").read_text())
    assert run["status"] == "succeeded" and run["error"] is None
    rec = read_records(folder / "diagnose_server_error.ipynb")
    watch = rec["recovery_monitor"]
    assert watch["max_duration_s"] == 13 and not watch["recovered"] and watch["samples"]
    assert all(s["status_code"] == 503 for s in watch["samples"])  # the fault never cleared
    assert "shortened to 13 s" in " ".join(watch["notes"]) and "--cell-timeout" in " ".join(watch["notes"])
    assert re.search(r"not recovered after 1[34] s", watch["verdict"]), watch["verdict"]
    assert "not recovered after" in rec["verdict"]["line"] and "fallback applied" in rec["verdict"]["line"]
    assert index["changes_applied"], index  # the approved fallback was applied and recorded
    assert "diagnose_server_error: 5xx" in out.stdout and "not recovered after" in out.stdout


@pytest.mark.notebook
def test_respond_run_timeout_covers_both_notebooks_and_the_watch_ends_before_it(cluster_stack, tmp_path):
    """`respond(run_timeout_s=35)`: the diagnosis gets what triage left; its watch ends before the deadline."""
    from runbook_lib.run.respond import respond

    st = cluster_stack
    st.set_mode("server_error", status=503)
    params = {"mistral_url": st.mistral_url, "service_health_url": st.service_health_url, "prometheus_url": "",
              "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0, "monitor_interval_s": 1.0,
              "incident_id": "INC-RUN"}
    index = respond(params, output_root=tmp_path, progress=False, run_timeout_s=35)
    assert [(n["name"], n["status"]) for n in index["notebooks"]] == [("triage", "succeeded"),
                                                                      ("diagnose_server_error", "succeeded")]
    folder = Path(index["folder"])
    runs = [json.loads((folder / f"{n}.run.json").read_text()) for n in ("triage", "diagnose_server_error")]
    assert runs[1]["run_timeout_s"] < 35 and runs[1]["status"] == "succeeded"  # what triage left, not 35 again
    watch = read_records(folder / "diagnose_server_error.ipynb")["recovery_monitor"]
    assert "--run-timeout" in " ".join(watch["notes"]), watch
    assert watch["verdict"].startswith(("not recovered after", "not monitored")), watch["verdict"]
    assert watch["max_duration_s"] < runs[1]["run_timeout_s"] - 2.0
