"""`runbook respond`: triage, then the diagnosis it names, one incident folder and index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.record import is_change, read_records
from runbook_lib.run.respond import respond

pytestmark = pytest.mark.notebook
BIN = Path(sys.executable).parent


def _params(st, **extra):
    return {"mistral_url": st.mistral_url, "service_health_url": st.service_health_url, "prometheus_url": "",
            "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0, "incident_id": "INC-42", **extra}


def _assert_dry_run_only(st, records):
    """The diagnosis planned its change(s) and applied none; only dryRun=All writes reached the cluster.

    A planned change with a diff was checked by the API server, so then there are writes; one that
    found nothing to alter sends none (the network modes here), so `writes` alone may be empty.
    """
    changes = [v for name, v in records.items() if is_change(name) and isinstance(v, dict)]
    assert changes and not any(c.get("applied") for c in changes), changes
    writes = st.kube.writes()
    assert writes or not any(c.get("diff") for c in changes), changes
    assert all(w["dry_run"] for w in writes), writes


def test_rate_limited_incident_runs_triage_then_rate_limit_diagnosis(cluster_stack, tmp_path):
    st = cluster_stack
    st.set_mode("rate_limited")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    index = respond(_params(st, sample_requests=2, sample_interval_s=0.1), output_root=tmp_path, progress=False)
    assert [n["name"] for n in index["notebooks"]] == ["triage", "diagnose_rate_limit"]
    assert index["notebooks"] and all(n["status"] == "succeeded" for n in index["notebooks"])
    # every call of our service is refused: a complete outage for our users (P1), whatever the cause
    assert (index["severity"], index["error_class"], index["status"]) == ("P1", "rate_limit", "diagnosed")
    history = index["severity_history"]
    assert history and history[0]["by"] == "triage" and history[-1]["to"] == "P1" and "429" in history[0]["why"]
    folder = Path(index["folder"])
    assert folder.name.endswith("-INC-42") and (folder / "triage.ipynb").exists()
    assert (folder / "diagnose_rate_limit.ipynb").exists()
    # the file holds paths relative to the folder ("."); respond hands its caller the real folder
    assert json.loads((folder / "incident.json").read_text()) == {**index, "folder": "."}
    assert index["changes_applied"] == []
    _assert_dry_run_only(st, read_records(Path(index["folder"]) / index["notebooks"][1]["path"]))


def test_resolved_stops_after_triage(cluster_stack, tmp_path):
    index = respond(_params(cluster_stack), output_root=tmp_path, progress=False)
    assert [n["name"] for n in index["notebooks"]] == ["triage"]
    assert (index["error_class"], index["status"]) == ("resolved", "triaged")


def test_approved_respond_records_the_applied_change(cluster_stack, tmp_path):
    st = cluster_stack
    st.set_mode("rate_limited")
    index = respond(_params(st, apply_changes=True, operator="bob", sample_requests=2, sample_interval_s=0.1),
                    output_root=tmp_path, progress=False)
    [change] = index["changes_applied"]
    assert change["who"] == "bob" and change["verified"] and "MAX_CONCURRENT_REQUESTS" in change["undo"]


def test_unknown_parameter_is_refused_by_name_and_leaves_a_failed_record(tmp_path):
    with pytest.raises(ParameterError, match="'no_such_param'"):
        respond({"no_such_param": 1, "incident_id": "INC-5"}, output_root=tmp_path, progress=False)
    [folder] = list(tmp_path.iterdir())  # as a refused `run` does: the record, marked failed, no notebook run
    index = json.loads((folder / "incident.json").read_text())
    assert folder.name.endswith("-INC-5") and index["status"] == "failed" and "'no_such_param'" in index["error"]
    assert json.loads((folder / "triage.run.json").read_text())["status"] == "failed"
    assert not list(folder.glob("*.ipynb"))


def test_cli_respond(cluster_stack, tmp_path):
    st = cluster_stack
    out = subprocess.run([str(BIN / "runbook"), "respond", "-q", "--output-dir", str(tmp_path), "--incident-id",
                          "INC-9", "-p", "mistral_url", st.mistral_url, "-p", "service_health_url",
                          st.service_health_url, "-p", "prometheus_url", "", "-p", "timeout_s", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("triage: P4 no errors -> resolved")
    assert "incident.json (triaged, 0 change(s) applied)" in out.stdout


FAST = {"sample_requests": 2, "sample_interval_s": 0.1, "monitor_interval_s": 0.2, "monitor_max_s": 1.0,
        "healthy_needed": 2, "probe_samples": 2}

# mode, mode options, triage timeout, expected error class, diagnosis notebook, the finding that must match
MODES = [
    ("auth_failure", {}, 2.0, "auth", "diagnose_auth", ("key_test", "401")),
    ("rate_limited", {}, 2.0, "rate_limit", "diagnose_rate_limit", ("limit_kind", "request_limit")),
    ("capacity_exceeded", {}, 2.0, "rate_limit", "diagnose_rate_limit", ("limit_kind", "capacity_exceeded")),
    ("server_error", {"status": 503}, 2.0, "provider_error", "diagnose_server_error", ("error_mix_now", "503")),
    ("hang", {}, 1.0, "network", "diagnose_network", ("network_phases", "first_byte")),
    ("slow", {"latency_s": 2.5}, 4.0, "network", "diagnose_network", ("network_phases", "time_to_first_byte_ms")),
]


@pytest.mark.parametrize("mode,opts,timeout_s,error_class,notebook,finding", MODES, ids=[m[0] for m in MODES])
def test_each_fault_mode_is_followed_to_its_runbook(cluster_stack, tmp_path, api_key, mode, opts, timeout_s,
                                                    error_class, notebook, finding):
    st = cluster_stack
    st.set_mode(mode, **opts)
    index = respond(_params(st, timeout_s=timeout_s, **FAST), output_root=tmp_path, progress=False)
    assert [n["name"] for n in index["notebooks"]] == ["triage", notebook], index
    assert index["notebooks"] and all(n["status"] == "succeeded" for n in index["notebooks"]), index["notebooks"]
    assert index["error_class"] == error_class
    rec = read_records(Path(index["folder"]) / index["notebooks"][1]["path"])
    record_name, fragment = finding
    assert fragment in json.dumps(rec[record_name]), rec[record_name]
    _assert_dry_run_only(st, rec)
    # the messages carry the measured severity level
    msg = (Path(index["folder"]) / "message-internal-slack.md").read_text()
    assert f"{rec['communications']['level']} INCIDENT" in msg
    # no secret anywhere in the incident folder
    pieces = {api_key[i:i + 8] for i in range(len(api_key) - 7)}
    for path in Path(index["folder"]).iterdir():
        text = path.read_text("utf-8", errors="replace")
        assert not [p for p in pieces if p in text], path.name


def test_flaky_goes_to_the_runbook_of_its_dominant_error(cluster_stack, tmp_path):
    st = cluster_stack
    st.set_mode("flaky", fail_fraction=0.6)
    index = respond(_params(st, samples=12, **FAST), output_root=tmp_path, progress=False)
    expected = {"provider_error": "diagnose_server_error", "rate_limit": "diagnose_rate_limit"}
    assert index["error_class"] in expected
    assert [n["name"] for n in index["notebooks"]] == ["triage", expected[index["error_class"]]]
    assert index["notebooks"] and all(n["status"] == "succeeded" for n in index["notebooks"])


def test_the_triage_verdict_is_in_incident_json_while_the_diagnosis_still_runs(cluster_stack, tmp_path):
    """What `runbook list`/`show` and serve read: the class, verdict and severity are written once the
    triage's notebook is final, not when the whole respond ends (a diagnosis may watch for minutes)."""
    import threading
    import time

    st = cluster_stack
    st.set_mode("server_error", status=503)
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(respond(
        _params(st, **{**FAST, "monitor_max_s": 4.0}), output_root=tmp_path, progress=False)))
    worker.start()
    early = None
    while worker.is_alive() and early is None:
        for path in tmp_path.glob("*/incident.json"):
            index = json.loads(path.read_text() or "{}")
            if index.get("verdict"):
                early = (index, (path.parent / "diagnose_server_error.run.json").exists())
        time.sleep(0.02)
    worker.join(120)
    assert early is not None, "the respond ended before its verdict was seen in incident.json"
    index, diagnosis_finished = early
    assert not diagnosis_finished and index["status"] == "running"
    assert index["error_class"] == done["error_class"] == "provider_error"
    assert index["verdict"] == done["verdict"] and index["severity"] == done["severity_history"][0]["to"]
    assert index["severity_history"][0]["by"] == "triage"
