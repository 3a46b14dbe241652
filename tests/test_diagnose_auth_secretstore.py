"""diagnose_auth.ipynb with `secret_store` (issue 18): the Secret the pods read is synced by External Secrets from
Vault, so the key is rotated in Vault (hvac, to the local fake KV v2 API), the runbook waits until the Secret
holds the new key, then restarts. A dry run writes nothing anywhere; no key or token is in the record folder."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from fake_api_support import FakeServer, vault_app
from runbook_lib.record import read_records
from runbook_lib.secrets import fingerprint

pytestmark = pytest.mark.notebook
NS, PATH = "default", "mistral/prod"


def _secret_key(kube) -> str:
    return base64.b64decode(kube.get("v1/secrets", "mistral-secrets", NS)["data"]["api-key"]).decode()


def _eso_sync(kube):
    """What the External Secrets Operator does at its refresh: copy Vault's field into the Secret."""
    c = kube.cluster
    info = c.info("", "v1", "secrets")

    def sync(path: str, data: dict) -> None:
        if path == PATH:
            with c.lock:
                cur = c.get(info, NS, "mistral-secrets")
                cur.setdefault("data", {})["api-key"] = base64.b64encode(data["api-key"].encode()).decode()
                c.replace(info, NS, "mistral-secrets", cur, False)

    with c.lock:  # the Secret as ESO leaves it: labelled as its own
        cur = c.get(info, NS, "mistral-secrets")
        cur["metadata"].setdefault("labels", {})["reconcile.external-secrets.io/managed"] = "true"
        c.replace(info, NS, "mistral-secrets", cur, False)
    return sync


def _revision(kube) -> int:
    return int(kube.get("apps/v1/deployments", "mistral-service", NS)["metadata"]["annotations"]
               ["deployment.kubernetes.io/revision"])


def test_rotation_in_vault_waits_for_the_sync_then_restarts(cluster_stack, api_key, monkeypatch, run_runbook):
    st = cluster_stack
    new_key, token = "sim-" + secrets.token_urlsafe(24), "hvs." + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    monkeypatch.setenv("VAULT_TOKEN", token)
    st.mistral.set_api_keys([new_key])  # the old key is revoked at Mistral
    rev = _revision(st.kube)
    with FakeServer(vault_app(token, on_write=_eso_sync(st.kube))) as vault:
        vault.secrets[PATH] = [{"api-key": api_key, "org": "acme"}]
        spec = f"vault+{vault.url}/secret/{PATH}#api-key"

        dry = run_runbook("diagnose_auth", st, secret_store=spec, operator="alice")
        assert dry.ok, dry.error
        rec = read_records(dry.notebook_path)
        rot = rec["change_rotate_secret"]
        assert rot["provider"] == "vault" and rot["dry_run_ok"] and not rot["applied"] and rot["version_before"] == "1"
        assert len(vault.secrets[PATH]) == 1 and _secret_key(st.kube) == api_key and _revision(st.kube) == rev
        assert "secret_sync" not in rec and rec["change_rollout_restart"]["applied"] is False

        done = run_runbook("diagnose_auth", st, secret_store=spec, operator="alice", apply_changes=True)
        assert done.ok, done.error
        rec = read_records(done.notebook_path)
        rot = rec["change_rotate_secret"]
        assert rot["applied"] and rot["verified"] and rot["who"] == "alice" and rot["identity"] == "token-runbooks"
        assert rot["diff"][0]["before"] == f"version 1: {fingerprint(api_key)}, {len(api_key)} chars"
        assert rot["diff"][0]["after"] == f"version 2: {fingerprint(new_key)}, {len(new_key)} chars"
        assert "vault kv rollback" in rot["undo"] and "-version=1" in rot["undo"]
        assert vault.secrets[PATH][-1] == {"api-key": new_key, "org": "acme"}
        assert rec["secret_sync"]["synced"] is True and _secret_key(st.kube) == new_key
        restart = rec["change_rollout_restart"]
        assert restart["applied"] and _revision(st.kube) > rev
        assert "applied" in rec["verdict"]["line"]

    pieces = {k[i:i + 8] for k in (api_key, new_key, token) for i in range(len(k) - 7)}
    for folder in {Path(dry.record_dir), Path(done.record_dir)}:
        for p in (p for p in folder.rglob("*") if p.is_file()):
            text = p.read_text("utf-8", errors="replace")
            assert not [piece for piece in pieces if piece in text], f"{p.name} holds a piece of a key or token"


def test_a_bad_secret_store_fails_the_first_cell_naming_it(cluster_stack, run_runbook):
    result = run_runbook("diagnose_auth", cluster_stack, secret_store="vault://token@vault:8200/secret/x")
    assert not result.ok and "secret_store" in (result.error or "")
    assert "vault+https://HOST:PORT/MOUNT/PATH#FIELD" in result.error


def test_no_restart_while_the_secret_still_holds_the_old_key(cluster_stack, api_key, monkeypatch, run_runbook):
    """Nothing syncs Vault into the Secret: rotated in Vault, but the pods are not restarted onto the old key.
    (timeout_s=20 leaves the sync wait no room inside the test's 60 s cell: one look, then the verdict.)"""
    st = cluster_stack
    new_key, token = "sim-" + secrets.token_urlsafe(24), "hvs." + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    monkeypatch.setenv("VAULT_TOKEN", token)
    st.mistral.set_api_keys([new_key])
    rev = _revision(st.kube)
    with FakeServer(vault_app(token)) as vault:
        vault.secrets[PATH] = [{"api-key": api_key}]
        result = run_runbook("diagnose_auth", st, secret_store=f"vault+{vault.url}/secret/{PATH}", timeout_s=20.0,
                             apply_changes=True, operator="alice")
    assert result.ok, result.error
    rec = read_records(result.notebook_path)
    assert rec["change_rotate_secret"]["applied"] and vault.secrets[PATH][-1] == {"api-key": new_key}
    sync = rec["secret_sync"]
    assert sync["synced"] is False and sync["fingerprint_seen"] == fingerprint(api_key)
    restart = rec["change_rollout_restart"]
    assert restart["applied"] is False and "does not hold the new key yet" in restart["note"]
    assert _revision(st.kube) == rev and _secret_key(st.kube) == api_key
