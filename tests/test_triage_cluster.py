"""Triage steps 3 and 4 with the cluster: error logs, findings for 401/403/unreachable, no writes,
and the runbook's "Prometheus down -> fall back to app logs"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook


def test_step4_groups_recent_errors_and_sends_no_write(cluster_stack, run_triage):
    st = cluster_stack
    st.set_mode("rate_limited")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    st.kube.clear_requests()
    rec = read_records(run_triage(st, kubeconfig=st.kubeconfig["ok"]).notebook_path)
    logs = rec["error_logs"]
    assert logs["status"] == "ok" and logs["matched"] > 0
    groups = {g["error_class"]: g["count"] for g in logs["groups"]}
    assert groups.get("rate_limited", 0) > 0, groups
    assert sum(groups.values()) == logs["matched"]
    assert len(logs["lines"]) <= 10 and logs["kubectl"].startswith("kubectl ")
    assert "logs" in logs["kubectl"] and "-l 'app in (mistral-service)'" in logs["kubectl"]  # the default, shell-quoted
    assert st.kube.requests, "the emulator saw no request at all"
    assert st.kube.writes() == []
    assert rec["verdict"]["line"].startswith("P1 rate limited")  # our service down on 429s


@pytest.mark.parametrize("user,status,words", [
    ("expired", "unauthorized", "re-authenticate"),
    ("forbidden", "forbidden", "escalate"),
])
def test_cluster_credential_failures_are_findings_and_verdict_is_reached(cluster_stack, run_triage, user, status,
                                                                          words):
    rec = read_records(run_triage(cluster_stack, kubeconfig=cluster_stack.kubeconfig[user]).notebook_path)
    logs = rec["error_logs"]
    assert logs["status"] == status and words in logs["reason"].lower()
    if user == "forbidden":
        assert logs["finding"]["verb"] and logs["finding"]["resource"]
        assert logs["finding"]["verb"] in logs["reason"] and logs["finding"]["resource"].split("/")[0] in logs["reason"]
    assert rec["verdict"]["severity"] in ("P1", "P2", "P3", "P4")
    assert any("logs" in u for u in rec["verdict"]["unavailable"])


def test_unreachable_cluster_is_unavailable_within_bound(cluster_stack, run_triage, tmp_path, dead_port):
    cfg = tmp_path / "dead-kubeconfig"
    cfg.write_text(open(cluster_stack.kubeconfig["ok"]).read().replace(
        cluster_stack.kube.url, f"http://127.0.0.1:{dead_port}"))
    rec = read_records(run_triage(cluster_stack, kubeconfig=str(cfg), timeout_s=1.0).notebook_path)
    assert rec["error_logs"]["status"] == "unreachable"
    assert rec["collection"]["timings_s"]["total_s"] < 1.0 + 1.5
    assert rec["severity"]["level"] == "P4" and "logs" in rec["severity"]["reason"]


def test_prometheus_down_falls_back_to_log_estimate(cluster_stack, run_triage, dead_port):
    st = cluster_stack
    st.set_mode("server_error", status=503)
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    rec = read_records(run_triage(st, kubeconfig=st.kubeconfig["ok"], prometheus_url=f"http://127.0.0.1:{dead_port}",
                                  metrics_window="30s").notebook_path)
    m = rec["error_rate"]
    assert m["status"] == "unavailable"
    est = m["estimate"]
    assert est["estimate"] is True and est["source"] == "pod logs" and est["requests"] > 0
    assert est["error_ratio"] > 0.5  # the fault was switched on a moment ago: most lines in the window fail
    assert set(est["per_model"]) == {"mistral-small-latest", "mistral-large-latest"}
    assert rec["severity"]["level"] == "P1"


def test_a_selector_matching_no_pod_is_said_not_read_as_no_errors(cluster_stack, run_triage, dead_port):
    """Step 4 and the log fallback of step 3 name the selector and the namespace that matched nothing."""
    result = run_triage(cluster_stack, label_selector="app=nobody", prometheus_url=f"http://127.0.0.1:{dead_port}")
    assert result.ok, result.error
    nb = json.loads(Path(result.notebook_path).read_text("utf-8"))
    shown = "\n".join("".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"]
                      for o in c.get("outputs", []))
    rec = read_records(nb)
    assert rec["error_logs"]["status"] == "ok" and rec["error_logs"]["pods"] == []
    assert "**No pods matched `app=nobody` in namespace `default`" in shown
    assert "No error lines" not in shown
    assert rec["error_rate"]["estimate"]["reason"].startswith("no pods matched `app=nobody`")
    assert "found nothing usable: no pods matched `app=nobody` in namespace `default`" in shown
