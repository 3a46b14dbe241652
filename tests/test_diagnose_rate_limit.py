"""diagnose_rate_limit.ipynb headless against the simulators and the cluster emulator."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from runbook_lib.run.execute import run_notebook
from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook


QUICK = {"sample_requests": 3, "sample_interval_s": 0.1}  # a short sampling step


@pytest.fixture
def run(run_runbook):
    """`run(stack, **parameters)`: diagnose_rate_limit with QUICK sampling (parameters override it)."""
    return functools.partial(run_runbook, "diagnose_rate_limit", **QUICK)


def test_dry_run_diagnoses_request_limit_and_changes_nothing(cluster_stack, run):
    st = cluster_stack
    st.set_mode("rate_limited")
    before = st.kube.container_env()
    result = run(st)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["limit_kind"]["kind"] == "request_limit"
    assert rec["rate_limit_headers"]["limits"]["req_remaining_minute"] == 0
    change = rec["change_rate_limit_env"]
    assert change["applied"] is False and change["dry_run_ok"] is True
    assert "set env deployment/mistral-service" in change["kubectl"] and "RATE_LIMIT_MODE=queue" in change["kubectl"]
    assert st.kube.container_env() == before
    assert st.kube.writes() and all(w["dry_run"] for w in st.kube.writes())
    folder = Path(result.record_dir)
    assert (folder / "message-internal-slack.md").read_text().startswith(":large_orange_circle: P2 INCIDENT")
    assert rec["verdict"]["line"].startswith("429 request_limit") and "dry run" in rec["verdict"]["line"]


def test_capacity_is_told_apart_from_our_limit(cluster_stack, run):
    cluster_stack.set_mode("capacity_exceeded")
    rec = read_records(run(cluster_stack).notebook_path)
    assert rec["limit_kind"]["kind"] == "capacity_exceeded"
    assert "capacity" in rec["limit_kind"]["explanation"]


def test_approved_change_is_applied_recorded_and_undoable(cluster_stack, run):
    st = cluster_stack
    st.set_mode("rate_limited")
    before = st.kube.container_env()
    rec = read_records(run(st, apply_changes=True, operator="alice", max_concurrent_requests=3).notebook_path)
    change = rec["change_rate_limit_env"]
    assert change["applied"] and change["verified"] and change["who"] == "alice" and change["at"]
    after = st.kube.container_env()
    assert after["MAX_CONCURRENT_REQUESTS"] == "3" and after["RATE_LIMIT_MODE"] == "queue"
    assert {k: v for k, v in after.items() if k not in ("MAX_CONCURRENT_REQUESTS", "RATE_LIMIT_MODE")} == \
        {k: v for k, v in before.items() if k not in ("MAX_CONCURRENT_REQUESTS", "RATE_LIMIT_MODE")}
    diff = {d["field"].rsplit("[", 1)[-1].rstrip("]"): (d["before"], d["after"]) for d in change["diff"]}
    assert diff["MAX_CONCURRENT_REQUESTS"] == (before.get("MAX_CONCURRENT_REQUESTS"), "3")
    assert "RATE_LIMIT_MODE-" in change["undo"] and change["inverse"]["RATE_LIMIT_MODE"] is None


def test_bad_approval_parameter_fails_first_cell(tmp_path):
    result = run_notebook("diagnose_rate_limit", {"apply_changes": "yes"}, output_root=tmp_path / "out",
                          progress=False, cell_timeout_s=60)
    assert result.status == "failed" and "'apply_changes'" in (result.error or "")


def test_recorded_undo_restores_the_cluster(cluster_stack, run):
    """Apply through the notebook, then apply the recorded inverse: the env is as before."""
    from runbook_lib import kube
    from runbook_lib.kube import write as remediate

    st = cluster_stack
    st.set_mode("rate_limited")
    before = st.kube.container_env()
    change = read_records(run(st, apply_changes=True, operator="alice",
                              max_concurrent_requests=2).notebook_path)["change_rate_limit_env"]
    assert st.kube.container_env() != before
    with kube.connect(st.kubeconfig["ok"], "", 5.0) as cluster:
        undo = remediate.plan_env(cluster, "default", "mistral-service", change["inverse"], "app",
                                  apply_changes=True, operator="alice")
    assert undo.applied and undo.verified
    assert st.kube.container_env() == before
