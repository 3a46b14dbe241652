"""`runbook respond`: triage, then the diagnosis it names, one incident folder and index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.respond import respond

pytestmark = pytest.mark.notebook
BIN = Path(sys.executable).parent


def _params(st, **extra):
    return {"mistral_url": st.mistral_url, "service_health_url": st.service_health_url, "prometheus_url": "",
            "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0, "incident_id": "INC-42", **extra}


def test_rate_limited_incident_runs_triage_then_rate_limit_diagnosis(cluster_stack, tmp_path):
    st = cluster_stack
    st.set_mode("rate_limited")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    index = respond(_params(st, sample_requests=2, sample_interval_s=0.1), output_root=tmp_path, progress=False)
    assert [n["name"] for n in index["notebooks"]] == ["triage", "diagnose_rate_limit"]
    assert all(n["status"] == "succeeded" for n in index["notebooks"])
    assert (index["severity"], index["error_class"], index["status"]) == ("P2", "rate_limit", "diagnosed")
    folder = Path(index["folder"])
    assert folder.name.endswith("-INC-42") and (folder / "triage.ipynb").exists()
    assert (folder / "diagnose_rate_limit.ipynb").exists()
    assert json.loads((folder / "incident.json").read_text()) == index
    assert index["changes_applied"] == [] and all(w["dry_run"] for w in st.kube.writes())


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


def test_unknown_parameter_is_refused_by_name(tmp_path):
    with pytest.raises(ParameterError, match="'no_such_param'"):
        respond({"no_such_param": 1}, output_root=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_cli_respond(cluster_stack, tmp_path):
    st = cluster_stack
    out = subprocess.run([str(BIN / "runbook"), "respond", "-q", "--output-dir", str(tmp_path), "--incident-id",
                          "INC-9", "-p", "mistral_url", st.mistral_url, "-p", "service_health_url",
                          st.service_health_url, "-p", "prometheus_url", "", "-p", "timeout_s", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("triage: P4 no errors -> resolved")
    assert "incident.json (triaged, 0 change(s) applied)" in out.stdout
