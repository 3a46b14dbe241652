"""diagnose_network.ipynb headless against the simulators and the cluster emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.runbooks.diagnose_network import recommend_timeout_ms
from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook


def _phases(rec):
    return {p["name"]: p for p in rec["network_phases"]["phases"]}


def test_hang_fails_first_byte_within_bound_and_changes_nothing(cluster_stack, run_runbook):
    st = cluster_stack
    st.set_mode("hang")
    before = st.kube.container_env()
    result = run_runbook("diagnose_network", st, timeout_s=1.0, new_timeout_ms=60000)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    phases = _phases(rec)
    assert phases["dns"]["ok"] and phases["tcp"]["ok"] and "127.0.0.1" in rec["network_phases"]["addresses"]
    assert rec["network_phases"]["failed_phase"] == "first_byte" and not phases["first_byte"]["ok"]
    assert "within 1 s" in phases["first_byte"]["detail"] and rec["network_phases"]["cause"] == "first_byte"
    pols = rec["network_policies"]
    assert pols["available"] and [a["target_ips"] for a in pols["analyses"]] == [["127.0.0.1"], []]
    public = pols["analyses"][-1]
    assert "public address" in public["target"] and "not public" in public["target"] and "mistral-service-egress" in public["blocking"]
    assert public["verdict"] == "blocked" and pols["verdict"] == "blocked"
    assert next(p for p in public["policies"] if p["name"] == "mistral-service-egress")["could_block_mistral"]
    assert "get networkpolicy -n default" in pols["kubectl"]
    change = rec["change_timeout_env"]
    assert change["applied"] is False and change["dry_run_ok"] is True and "MISTRAL_TIMEOUT=60000" in change["kubectl"]
    assert st.kube.writes() and all(w["dry_run"] for w in st.kube.writes())
    assert st.kube.container_env() == before
    assert rec["timeout_recommendation"]["computed_ms"] == 30000  # 2 x 1000 ms bound -> floor 30000
    assert rec["communications"]["level"] == "P2"
    assert (Path(result.record_dir) / "message-internal-slack.md").exists()
    line = rec["verdict"]["line"]
    assert line.startswith("network: first_byte phase failed") and "dry run" in line
    # the policy would block a public address, but the measured call connects (TCP ok): not the cause
    assert "egress policy would block (not the cause: calls connect)" in line
    assert pols["policy_is_cause"] is False and "not the cause" in pols["policy_cause"]
    assert result.duration_s < 20


def test_closed_port_fails_tcp_with_refused_and_is_p1(cluster_stack, dead_port, run_runbook):
    st = cluster_stack
    rec = read_records(run_runbook("diagnose_network", st, mistral_url=f"http://127.0.0.1:{dead_port}",
                                   timeout_s=1.0, service_health_url="").notebook_path)
    phases = _phases(rec)
    assert phases["dns"]["ok"] and not phases["tcp"]["ok"] and "first_byte" not in phases
    assert "refused" in phases["tcp"]["detail"].lower() and rec["network_phases"]["cause"] == "tcp_refused"
    assert rec["communications"]["level"] == "P1" and rec["verdict"]["level"] == "P1"
    assert rec["verdict"]["line"].startswith("network: tcp phase failed (connection refused)")


def test_slow_api_measured_and_approved_timeout_applied(cluster_stack, run_runbook):
    st = cluster_stack
    st.set_mode("slow", latency_s=0.5)
    before = st.kube.container_env()
    rec = read_records(run_runbook("diagnose_network", st, apply_changes=True, operator="alice",
                                   new_timeout_ms=45000).notebook_path)
    net = rec["network_phases"]
    assert net["failed_phase"] is None and 450 <= net["time_to_first_byte_ms"] <= 1500
    assert 450 <= _phases(rec)["first_byte"]["ms"] <= 1500
    reco = rec["timeout_recommendation"]
    assert reco["current_ms"] == 30000 and reco["computed_ms"] == 30000 and reco["recommended_ms"] == 45000
    assert any("measured time to first byte" in s for s in reco["arithmetic"])
    assert any(s.startswith("2 x ") for s in reco["arithmetic"]) and "overridden" in reco["arithmetic"][-1]
    change = rec["change_timeout_env"]
    assert change["applied"] and change["verified"] and change["who"] == "alice" and change["at"]
    assert "MISTRAL_TIMEOUT=30000" in change["undo"] and change["inverse"] == {"MISTRAL_TIMEOUT": "30000"}
    after = st.kube.container_env()
    assert after["MISTRAL_TIMEOUT"] == "45000"
    assert {k: v for k, v in after.items() if k != "MISTRAL_TIMEOUT"} == \
        {k: v for k, v in before.items() if k != "MISTRAL_TIMEOUT"}
    assert rec["proxy_environment"]["deployment"] == [] and rec["proxy_environment"]["current_timeout_ms"] == 30000
    assert "applied" in rec["verdict"]["line"] and rec["communications"]["status"] == "MITIGATING"


def test_unreachable_cluster_still_reaches_a_verdict(cluster_stack, tmp_path, dead_port, run_runbook):
    st = cluster_stack
    dead = tmp_path / "kubeconfig-dead"
    dead.write_text(Path(st.kubeconfig["ok"]).read_text().replace(st.kube.url, f"http://127.0.0.1:{dead_port}"))
    result = run_runbook("diagnose_network", st, kubeconfig=str(dead), timeout_s=1.0)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    pols = rec["network_policies"]
    assert pols["available"] is False and pols["verdict"] is None
    assert pols["analyses"][0]["finding"]["status"] == "unreachable"
    assert rec["proxy_environment"]["finding"]["status"] == "unreachable"
    assert rec["change_timeout_env"]["applied"] is False and rec["change_timeout_env"]["finding"]
    assert "egress policy unavailable" in rec["verdict"]["line"] and "not possible" in rec["verdict"]["line"]


@pytest.mark.parametrize(("ttfb", "failed", "current", "expected"), [
    (500.0, None, None, 30000),          # 2 x 500 = 1000 -> floor
    (40_000.0, None, 30000, 80000),      # 2 x 40 s, above the current value
    (200_000.0, None, None, 300000),     # capped
    (None, "first_byte", 10000, 30000),  # 2 x 5 s bound -> floor, above the current 10 s
    (500.0, None, 60000, 60000),         # never lowers the current timeout
    (None, "tcp", None, 30000),          # nothing measured: the floor, with the caveat
])
def test_timeout_arithmetic(ttfb, failed, current, expected):
    value, lines = recommend_timeout_ms(ttfb, failed, 5000.0, current)
    assert value == expected and lines
    if failed == "tcp":
        assert "does not fix" in lines[0]
