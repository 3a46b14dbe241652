"""diagnose_auth.ipynb headless against the simulators and the cluster emulator."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from runbook_lib.record import read_records
from runbook_lib.secrets import fingerprint

pytestmark = pytest.mark.notebook


@pytest.fixture(autouse=True)
def _no_new_key(monkeypatch):
    monkeypatch.delenv("NEW_MISTRAL_API_KEY", raising=False)


def _secret_value(kube):
    sec = kube.get("v1/secrets", "mistral-secrets", "default")
    data = sec.get("data") or {}
    return base64.b64decode(data["api-key"]).decode() if "api-key" in data else sec["stringData"]["api-key"]


def _revision(kube):
    dep = kube.get("apps/v1/deployments", "mistral-service", "default")
    return int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def _revoke_old_key_accept(st, new_key):
    """The old key is revoked at Mistral; only the new one is accepted."""
    st.mistral.set_api_keys([new_key])


def test_dry_run_diagnoses_revoked_key_and_changes_nothing(cluster_stack, api_key, run_runbook):
    st = cluster_stack
    st.set_mode("auth_failure")
    rev = _revision(st.kube)
    result = run_runbook("diagnose_auth", st)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["key_under_test"] == {"env_var": "MISTRAL_API_KEY", "present": True, "length": len(api_key),
                                     "fingerprint": fingerprint(api_key)}
    src = rec["service_key_source"]
    assert (src["source"], src["secret"], src["key"]) == ("secret", "mistral-secrets", "api-key")
    assert rec["key_test"]["verdict"] == "fails" and set(rec["key_test"]["status_codes"]) == {401}
    cmp_ = rec["key_comparison"]
    assert cmp_["same"] is True and cmp_["service_fingerprint"] == fingerprint(api_key)
    assert cmp_["outcome"] == "key_rejected" and "console.mistral.ai" in cmp_["advice"]
    assert rec["change_rotate_secret"]["skipped"] is True
    restart = rec["change_rollout_restart"]
    assert restart["applied"] is False and restart["dry_run_ok"] is True
    assert _secret_value(st.kube) == api_key and _revision(st.kube) == rev
    assert st.kube.writes() and all(w["dry_run"] for w in st.kube.writes())
    folder = Path(result.record_dir)
    assert (folder / "message-internal-slack.md").read_text().startswith(":red_circle: P1 INCIDENT")
    line = rec["verdict"]["line"]
    assert line.startswith("401 key_rejected") and "dry run" in line


def test_approved_rotation_applies_new_key_restarts_and_leaks_nothing(cluster_stack, api_key, monkeypatch, run_runbook):
    st = cluster_stack
    new_key = "sim-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    _revoke_old_key_accept(st, new_key)
    rev = _revision(st.kube)
    result = run_runbook("diagnose_auth", st, apply_changes=True, operator="alice")
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["key_comparison"]["outcome"] == "key_rejected"
    rot = rec["change_rotate_secret"]
    assert rec["new_key_test"]["status_code"] == 200
    assert rot["applied"] and rot["verified"] and rot["who"] == "alice" and rot["at"] and rot["undo"]
    assert rot["diff"][0]["before"].startswith(fingerprint(api_key))
    assert rot["diff"][0]["after"].startswith(fingerprint(new_key))
    sec = st.kube.get("v1/secrets", "mistral-secrets", "default")
    assert sec["data"]["api-key"] == base64.b64encode(new_key.encode()).decode()
    restart = rec["change_rollout_restart"]
    assert restart["applied"] and restart["verified"] and restart["who"] == "alice" and restart["at"]
    assert f"--to-revision={rev}" in restart["undo"]
    assert _revision(st.kube) > rev and int(restart["revision_after"]) > rev
    assert "applied" in rec["verdict"]["line"]

    # (c) no key, nor any 8-character piece of one, anywhere in the record folder
    pieces = {k[i:i + 8] for k in (api_key, new_key) for i in range(len(k) - 7)}
    files = [p for p in Path(result.record_dir).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"diagnose_auth.ipynb", "diagnose_auth.html", "diagnose_auth.run.json"} <= names
    assert any(n.startswith("message-") for n in names)
    for p in files:
        text = p.read_text("utf-8", errors="replace")
        leaked = [piece for piece in pieces if piece in text]
        assert not leaked, f"{p.name} holds a piece of a key"


def test_new_key_that_does_not_work_is_not_rotated_in(cluster_stack, api_key, monkeypatch, run_runbook):
    st = cluster_stack
    st.set_mode("auth_failure")
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sim-" + secrets.token_urlsafe(24))
    rev = _revision(st.kube)
    rec = read_records(run_runbook("diagnose_auth", st, apply_changes=True).notebook_path)
    rot, restart = rec["change_rotate_secret"], rec["change_rollout_restart"]
    assert rec["new_key_test"]["status_code"] == 401 and not rot["applied"] and "Not applied" in rot["note"]
    assert not restart["applied"] and "Not applied" in restart["note"]
    assert _secret_value(st.kube) == api_key and _revision(st.kube) == rev


def test_forbidden_user_gets_escalate_and_a_verdict(cluster_stack, tmp_path, monkeypatch, run_runbook):
    st = cluster_stack
    st.set_mode("auth_failure")
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sim-" + secrets.token_urlsafe(24))
    viewer = str(st.kube.write_kubeconfig(tmp_path / "kubeconfig-viewer", user="viewer"))
    result = run_runbook("diagnose_auth", st, kubeconfig=viewer)
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["service_key_source"]["source"] == "secret"  # the viewer reads the deployment
    assert rec["key_comparison"]["outcome"] == "not_compared"
    rot = rec["change_rotate_secret"]
    assert not rot["applied"] and "escalate" in rot["finding"]["message"].lower()
    assert "escalate" in rec["change_rollout_restart"]["finding"]["message"].lower()
    assert rec["verdict"]["line"].startswith("401 not_compared")
