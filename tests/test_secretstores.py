"""Secret managers for the 401 rotation (issue 18): HashiCorp Vault KV v2 through hvac, GCP Secret Manager
through google-cloud-secret-manager.

No Vault server can run here (no `vault` binary in Debian's or PyPI's packages on this machine), and
Secret Manager has no local emulator: both are tested through their client library's own transport over
real HTTP (hvac's requests adapter pointed at `--vault-addr`; the GCP client's REST transport with
url_scheme=http) against local aiohttp fakes (tests/fake_api_support.py) that check the token, the body
and check-and-set like the services do. The new key is tested first against the Mistral simulator. Every
test plants the old key, the new key and the credentials, and proves none of them is in the change record,
the CLI's output, incident.json or the logs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from fake_api_support import FakeServer, gcp_app, vault_app
from runbook_lib.errors import ParameterError
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.secrets import fingerprint
from runbook_lib.secretstores.base import mistral_key_test, rotate_key
from runbook_lib.secretstores.gcp import GcpSecretStore
from runbook_lib.secretstores.vault import VaultStore
from runbook_lib.sim.mistral import MistralSimulator

RUNBOOK = Path(sys.executable).parent / "runbook"
PATH = "mistral/prod"


@pytest.fixture
def planted(monkeypatch) -> dict[str, str]:
    """The secrets of a rotation: the old key (in the store), the new one and the credentials (in the env)."""
    s = {"old": "sk-old-" + secrets.token_urlsafe(24), "new": "sk-new-" + secrets.token_urlsafe(24),
         "vault_token": "hvs." + secrets.token_urlsafe(24), "gcp_token": "ya29." + secrets.token_urlsafe(24)}
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", s["new"])
    monkeypatch.setenv("VAULT_TOKEN", s["vault_token"])
    return s


def assert_no_secret(planted: dict[str, str], *texts: str) -> None:
    for name, value in planted.items():
        for form in (value, base64.b64encode(value.encode()).decode(), value[8:]):
            for text in texts:
                assert form not in text, f"the {name} secret (or its base64) is in an output"


@pytest.fixture
def mistral(planted):
    """The Mistral API simulator: the new key works, the old one is rejected (401)."""
    with MistralSimulator(api_keys=[planted["new"]]) as sim:
        yield sim


@pytest.fixture
def vault(planted):
    with FakeServer(vault_app(planted["vault_token"])) as server:
        server.secrets[PATH] = [{"api-key": planted["old"], "org": "acme"}]
        yield server


def _writes(server: FakeServer) -> list:
    return [r for r in server.requests if r.method in ("POST", "PUT") and "/data/" in r.path]


# ---- Vault --------------------------------------------------------------------------------------------------
def test_vault_dry_run_tests_the_key_checks_permission_and_writes_nothing(vault, mistral, planted, caplog):
    caplog.set_level(logging.DEBUG)
    change = rotate_key(VaultStore(vault.url, PATH), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        operator="alice", incident="INC-9")
    assert change.ok and change.dry_run_ok and not change.applied, change.finding
    assert _writes(vault) == [] and len(vault.secrets[PATH]) == 1
    assert change.new_key_test["works"] is True and "HTTP 200" in change.new_key_test["seen"]
    assert change.version_before == "1" and change.identity == "token-runbooks" and change.who == "alice"
    assert change.diff[0]["before"] == f"version 1: {fingerprint(planted['old'])}, {len(planted['old'])} chars"
    assert fingerprint(planted["new"]) in change.diff[0]["after"]
    assert "-cas=1" in change.command and '"$NEW_MISTRAL_API_KEY"' in change.command and "api-key=-" in change.command
    assert change.undo.endswith("-mount=secret -version=1 mistral/prod") and "vault kv rollback" in change.undo
    assert "read, update" in change.note
    assert_no_secret(planted, json.dumps(change.to_dict()), caplog.text)


def test_vault_applied_rotation_keeps_other_fields_and_the_old_version(vault, mistral, planted, caplog):
    caplog.set_level(logging.DEBUG)
    change = rotate_key(VaultStore(vault.url, PATH), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        apply_changes=True, operator="alice")
    assert change.applied and change.verified and change.ok, change.finding
    assert vault.secrets[PATH] == [{"api-key": planted["old"], "org": "acme"}, {"api-key": planted["new"], "org": "acme"}]
    assert json.loads(_writes(vault)[0].body)["options"] == {"cas": 1}
    assert change.version_after == "2" and change.diff[0]["after"].startswith("version 2: ")
    assert "-version=1" in change.undo  # version 1 still holds the old key: the rollback's source
    assert_no_secret(planted, json.dumps(change.to_dict()), caplog.text)


def test_vault_a_rejected_new_key_is_not_written(vault, mistral, planted, monkeypatch):
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sk-revoked-" + secrets.token_urlsafe(16))
    change = rotate_key(VaultStore(vault.url, PATH), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        apply_changes=True)
    assert not change.applied and change.finding.status == "new_key_rejected" and "HTTP 401" in change.finding.message
    assert _writes(vault) == []


def test_vault_refusals_are_findings_and_nothing_is_written(planted, mistral, monkeypatch):
    test = mistral_key_test(mistral.url)
    with FakeServer(vault_app(planted["vault_token"], capabilities=("read",))) as ro:
        ro.secrets[PATH] = [{"api-key": planted["old"]}]
        change = rotate_key(VaultStore(ro.url, PATH), "NEW_MISTRAL_API_KEY", test=test, apply_changes=True)
        assert not change.dry_run_ok and change.finding.status == "forbidden" and "read" in change.finding.message
        assert _writes(ro) == []

    def other_writer(store):
        store[PATH].append({"api-key": "sk-someone-else-rotated-it-too"})

    with FakeServer(vault_app(planted["vault_token"], other_writer=other_writer)) as raced:
        raced.secrets[PATH] = [{"api-key": planted["old"]}]
        change = rotate_key(VaultStore(raced.url, PATH), "NEW_MISTRAL_API_KEY", test=test, apply_changes=True)
        assert change.finding.status == "conflict" and not change.applied and len(raced.secrets[PATH]) == 2

    with FakeServer(vault_app("hvs.someone-elses-token")) as other:
        other.secrets[PATH] = [{"api-key": planted["old"]}]
        change = rotate_key(VaultStore(other.url, PATH), "NEW_MISTRAL_API_KEY", test=test)
        assert change.finding.status == "forbidden" and "permission denied" in change.finding.message
        monkeypatch.delenv("VAULT_TOKEN")
        sent = len(other.requests)
        change = rotate_key(VaultStore(other.url, PATH), "NEW_MISTRAL_API_KEY", test=test)
        assert change.finding.status == "unauthenticated" and "$VAULT_TOKEN" in change.finding.message
        assert len(other.requests) == sent  # hvac's own fallbacks (~/.vault-token) are never used
    with pytest.raises(ParameterError, match="new_key_env"):
        rotate_key(VaultStore("http://127.0.0.1:1", PATH), "UNSET_NEW_KEY_VAR", test=test)


def test_runbook_rotate_key_cli_records_in_the_incident(vault, mistral, planted, tmp_path):
    folder = tmp_path / "outputs" / "20261123T100052Z-INC-9"
    folder.mkdir(parents=True)
    write_index(folder, {"id": "INC-9", "status": "diagnosed", "started_at": "2026-11-23T10:00:52Z",
                         "changes_applied": []})
    base = [str(RUNBOOK), "rotate-key", "--store", "vault", "--vault-addr", vault.url, "--vault-path", PATH,
            "--mistral-url", mistral.url, "--incident", "INC-9", "--output-dir", str(tmp_path / "outputs"),
            "--operator", "alice"]
    env = dict(os.environ)
    dry = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert dry.returncode == 0 and "DRY RUN: may write" in dry.stdout, dry.stdout + dry.stderr
    assert _writes(vault) == []
    done = subprocess.run(base + ["--apply-changes"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and "APPLIED and verified" in done.stdout, done.stdout + done.stderr
    index = read_index(folder)
    assert [c["applied"] for c in index["secret_store_changes"]] == [False, True]
    assert index["changes_applied"][0]["undo"].startswith("vault kv rollback")
    show = subprocess.run([str(RUNBOOK), "show", "INC-9", "--output-dir", str(tmp_path / "outputs")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert "rotate key in vault" in show.stdout and "vault kv rollback" in show.stdout, show.stdout + show.stderr
    assert vault.secrets[PATH][-1]["api-key"] == planted["new"]
    assert_no_secret(planted, dry.stdout + dry.stderr + done.stdout + done.stderr + show.stdout,
                     (folder / "incident.json").read_text())


# ---- GCP Secret Manager -------------------------------------------------------------------------------------
@pytest.fixture
def gcp(planted):
    with FakeServer(gcp_app(planted["gcp_token"], "shop-prod", "mistral-api-key")) as server:
        server.versions.append({"data": planted["old"].encode(), "state": "ENABLED"})
        yield server


def gcp_store(url: str, token: str, secret: str = "mistral-api-key", timeout_s: float = 10.0) -> GcpSecretStore:
    """The Google client as an application builds it, with its REST transport aimed at `url` (the seam)."""
    from google.cloud import secretmanager
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest import \
        SecretManagerServiceRestTransport
    from google.oauth2.credentials import Credentials

    transport = SecretManagerServiceRestTransport(host=url.split("://", 1)[1], credentials=Credentials(token=token),
                                                  url_scheme="http")
    return GcpSecretStore("shop-prod", secret, timeout_s=timeout_s,
                          client=secretmanager.SecretManagerServiceClient(transport=transport))


def test_gcp_dry_run_asks_permissions_and_adds_nothing(gcp, mistral, planted, caplog):
    caplog.set_level(logging.DEBUG)
    change = rotate_key(gcp_store(gcp.url, planted["gcp_token"]), "NEW_MISTRAL_API_KEY",
                        test=mistral_key_test(mistral.url), operator="alice")
    assert change.ok and change.dry_run_ok and not change.applied, change.finding
    assert len(gcp.versions) == 1 and gcp.versions[0]["state"] == "ENABLED"
    assert any(r.path.endswith(":testIamPermissions") for r in gcp.requests)
    assert all(r.headers.get("Authorization") == f"Bearer {planted['gcp_token']}" for r in gcp.requests)
    assert change.version_before == "1" and "gcloud secrets versions add mistral-api-key --data-file=-" in change.command
    assert "disable 1 --secret=mistral-api-key" in change.command
    assert_no_secret(planted, json.dumps(change.to_dict()), caplog.text)


def test_gcp_rotation_adds_a_version_and_disables_the_old(gcp, mistral, planted, caplog):
    caplog.set_level(logging.DEBUG)
    change = rotate_key(gcp_store(gcp.url, planted["gcp_token"]), "NEW_MISTRAL_API_KEY",
                        test=mistral_key_test(mistral.url), apply_changes=True, operator="alice")
    assert change.applied and change.verified and change.ok, change.finding
    assert [(v["data"].decode(), v["state"]) for v in gcp.versions] == [(planted["old"], "DISABLED"),
                                                                      (planted["new"], "ENABLED")]
    assert change.version_after == "2" and "Version 1 disabled." in change.note
    assert change.undo.startswith("gcloud secrets versions enable 1 --secret=mistral-api-key --project=shop-prod")
    assert "access 1" in change.undo and "disable 2" in change.undo
    assert_no_secret(planted, json.dumps(change.to_dict()), caplog.text)


def test_gcp_refusals_and_an_unreachable_api_end_in_findings(planted, mistral, dead_port):
    test = mistral_key_test(mistral.url)
    add_only = ("secretmanager.versions.add", "secretmanager.versions.access")
    with FakeServer(gcp_app(planted["gcp_token"], "shop-prod", "mistral-api-key", granted=add_only)) as server:
        server.versions.append({"data": planted["old"].encode(), "state": "ENABLED"})
        change = rotate_key(gcp_store(server.url, planted["gcp_token"]), "NEW_MISTRAL_API_KEY", test=test,
                            apply_changes=True)
        assert change.finding.status == "forbidden" and "secretmanager.versions.disable" in change.finding.message
        assert len(server.versions) == 1
        missing = rotate_key(gcp_store(server.url, planted["gcp_token"], secret="nope"), "NEW_MISTRAL_API_KEY", test=test)
        assert missing.finding.status == "not_found"
        wrong = rotate_key(gcp_store(server.url, "ya29.not-the-token"), "NEW_MISTRAL_API_KEY", test=test)
        assert wrong.finding.status == "unauthenticated"
    gone = rotate_key(gcp_store(f"http://127.0.0.1:{dead_port}", planted["gcp_token"], timeout_s=2),
                      "NEW_MISTRAL_API_KEY", test=test)
    assert gone.finding.status == "unreachable" and not gone.applied


# ---- everything optional ------------------------------------------------------------------------------------
WITHOUT = ("hvac", "google", "google.cloud", "google.cloud.secretmanager", "grafana_foundation_sdk")


def _without_optional(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter where importing any optional integration library fails."""
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in WITHOUT) + script)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_the_core_works_without_the_integration_libraries(tmp_path, planted):
    out = _without_optional(
        "from runbook_lib.cli import main\n"
        "import runbook_lib.runbooks.diagnose_auth, runbook_lib.kube.rotation\n"
        "rc = [main(['rules', '-o', 'r.yml']), main(['rotate-key', '--store', 'vault', '--vault-addr', "
        "'http://127.0.0.1:9', '--vault-path', 'x', '--mistral-url', 'http://127.0.0.1:9', '--timeout', '1']), "
        "main(['rotate-key', '--store', 'gcp', '--gcp-project', 'p', '--gcp-secret', 's', '--mistral-url', "
        "'http://127.0.0.1:9', '--timeout', '1']), main(['dashboard'])]\n"
        "print('RC', rc)\n", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "RC [0, 2, 2, 2]" in out.stdout, out.stdout + out.stderr
    for package, extra in (("hvac", "vault"), ("google-cloud-secret-manager", "gcp"), ("grafana-foundation-sdk", "grafana")):
        assert f"runbook: {package} is not installed (an optional integration): .venv/bin/pip install -e '.[{extra}]'" \
               in out.stderr, out.stderr
    assert (tmp_path / "r.yml").read_text().startswith("# Alerting rules")
