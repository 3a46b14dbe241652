"""diagnose_server_error.ipynb headless against the simulators and the cluster emulator."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest

from runbook_lib.run.execute import run_notebook
from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook

MAX_S = 3.0


STATE_AFTER_SAMPLES = 3  # steps.state_after's default: probes sent before the monitor (it runs last)
QUICK = {"probe_samples": 3, "monitor_interval_s": 0.2, "monitor_max_s": MAX_S, "healthy_needed": 2}


@pytest.fixture
def run(run_runbook):
    """`run(stack, **parameters)`: diagnose_server_error with QUICK probing and monitor (parameters override it)."""
    return functools.partial(run_runbook, "diagnose_server_error", **QUICK)


def test_dry_run_503_sees_incident_changes_nothing_and_gives_up_in_bound(cluster_stack, run):
    st = cluster_stack
    st.set_mode("server_error", status=503)
    before = st.kube.container_env()
    result = run(st, prometheus_url="http://127.0.0.1:1")  # nothing listens: "unavailable"
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    now = rec["error_mix_now"]
    assert now["verdict"] == "server_error" and now["all_failed"]
    assert {p["status_code"] for p in now["probes"]} == {503}
    assert all("Service unavailable" in p["detail"] for p in now["probes"])
    assert rec["error_mix_history"]["status"] == "unavailable"
    provider = rec["provider_status"]
    assert provider["state"] == "incident" and any("Chat API" in " ".join(u["affected"]) + u["title"]
                                                   for u in provider["ongoing"])
    change = rec["change_fallback_env"]
    assert change["applied"] is False and change["dry_run_ok"] is True
    assert "MISTRAL_FALLBACK=true" in change["kubectl"] and "cached responses or an error page" in change["note"]
    assert st.kube.container_env() == before
    assert st.kube.writes() and all(w["dry_run"] for w in st.kube.writes())
    mon = rec["recovery_monitor"]
    assert mon["stopped_because"] == "max_duration_reached" and not mon["recovered"]
    assert MAX_S - 0.5 <= mon["duration_s"] <= MAX_S + 2.0 and len(mon["samples"]) >= 5
    assert all(s["status_code"] == 503 for s in mon["samples"])
    assert rec["communications"]["level"] == "P1"
    assert (Path(result.record_dir) / "message-internal-slack.md").read_text().startswith(":red_circle: P1 INCIDENT")
    line = rec["verdict"]["line"]
    assert line.startswith("5xx server_error (HTTP 503)") and "provider incident" in line and "dry run" in line
    assert "not recovered" in line


def test_monitor_records_recovery_after_n_healthy(cluster_stack, run):
    st = cluster_stack
    st.set_mode("server_error", status=503)
    stop = threading.Event()

    def recover_after_first_monitor_probe() -> None:
        # probe_samples=2 probes in step 1, STATE_AFTER_SAMPLES in "state after", then the monitor (last):
        # switch once the monitor's first /v1/models got 503, so it sees the outage whatever the timing.
        while not stop.wait(0.05):
            answered = [r for r in st.mistral.requests if r["path"] == "/v1/models" and r["status"] == 503]
            if len(answered) >= 2 + STATE_AFTER_SAMPLES + 1:
                st.set_mode("ok")
                return

    watcher = threading.Thread(target=recover_after_first_monitor_probe, daemon=True)
    watcher.start()
    try:
        rec = read_records(run(st, probe_samples=2).notebook_path)
    finally:
        stop.set()
        watcher.join(5)
    mon = rec["recovery_monitor"]
    assert mon["stopped_because"] == "recovered" and mon["recovered"]
    assert [s["healthy"] for s in mon["samples"][-2:]] == [True, True] and mon["consecutive_healthy"] == 2
    assert any(s["status_code"] == 503 for s in mon["samples"]) and mon["duration_s"] < MAX_S
    assert rec["verdict"]["recovered"] and rec["verdict"]["line"].endswith("; recovered")


def test_approved_fallback_is_applied_recorded_and_undoable(cluster_stack, run):
    st = cluster_stack
    st.set_mode("server_error", status=500)
    before = st.kube.container_env()
    rec = read_records(run(st, apply_changes=True, operator="alice", monitor_max_s=0.5).notebook_path)
    change = rec["change_fallback_env"]
    assert change["applied"] and change["verified"] and change["who"] == "alice" and change["at"]
    after = st.kube.container_env()
    assert after["MISTRAL_FALLBACK"] == "true"
    assert {k: v for k, v in after.items() if k != "MISTRAL_FALLBACK"} == \
        {k: v for k, v in before.items() if k != "MISTRAL_FALLBACK"}
    assert change["undo"] and change["inverse"] == {"MISTRAL_FALLBACK": before.get("MISTRAL_FALLBACK")}
    assert rec["communications"]["status"] == "MITIGATING"
    assert "fallback applied" in rec["verdict"]["line"] and "HTTP 500" in rec["verdict"]["line"]


def test_html_record_has_the_monitor_figure_and_no_traceback(cluster_stack, run):
    st = cluster_stack
    st.set_mode("flaky", fail_fraction=1.0)
    result = run(st, monitor_max_s=0.6)
    assert result.ok, result.error
    html = Path(result.html_path).read_text("utf-8")
    assert html.count("<img") >= 1 and "data:image/png;base64" in html
    assert "Traceback" not in html
    assert "HTTP 503" in html or "HTTP 429" in html  # the per-probe progress lines are in the record


def test_bad_monitor_parameter_fails_first_cell(tmp_path):
    result = run_notebook("diagnose_server_error", {"healthy_needed": 0}, output_root=tmp_path / "out",
                          progress=False, cell_timeout_s=60)
    assert result.status == "failed" and "'healthy_needed'" in (result.error or "")


def test_the_severity_follows_the_seed_table_on_what_the_probes_really_got(cluster_stack, run):
    """A flaky provider (30% 503/429): the level proposed is the table's on this runbook's own probes,
    checked against the simulator's log of those probes (not "any 5xx is P2": a 25% fault was raised
    from triage's P3 to P2 by that rule)."""
    st = cluster_stack
    st.set_mode("flaky", fail_fraction=0.3)
    seen_before = len([r for r in st.mistral.requests if r["path"] == "/v1/models"])
    result = run(st, probe_samples=5)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    probes = rec["error_mix_now"]["probes"]
    truth = [r["status"] for r in st.mistral.requests if r["path"] == "/v1/models"][seen_before:seen_before + 5]
    assert sorted(p["status_code"] for p in probes) == sorted(truth), "the record's probes are not what was sent"
    failed = sum(1 for code in truth if code != 200) / len(truth)
    expected = "P1" if failed == 1 else "P2" if failed >= 0.5 else "P3" if failed > 0 else "P4"
    assert rec["severity"]["level"] == rec["communications"]["level"] == expected, (truth, rec["severity"])
    assert f"{failed:.0%} of probes failed" in rec["severity"]["why"] or expected in ("P1", "P4")
    line = rec["verdict"]["line"]  # "5xx" only when a probe got one
    assert line.startswith("5xx ") == any(code >= 500 for code in truth), (line, truth)
