"""AWS Secrets Manager for the 401 rotation (issue 18), through boto3 against moto's server mode over real HTTP.

`moto_server` runs as a separate process on a free port; boto3 reaches it only through AWS_ENDPOINT_URL (the
standard variable the store reads nothing else for), with dummy credentials in the standard variables. What
the store did is read back from moto by an independent boto3 client: the versions and their staging labels
(AWSCURRENT, AWSPREVIOUS) and the values. The new key is tested first against the Mistral simulator. The old
key, the new key and the AWS secret access key are planted and searched for in every output and written file.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.records.incident import read_index, write_index
from runbook_lib.secrets import fingerprint
from runbook_lib.secretstores import spec as store_spec
from runbook_lib.secretstores.aws import AwsSecretStore
from runbook_lib.secretstores.base import mistral_key_test, rotate_key
from runbook_lib.sim.mistral import MistralSimulator

BIN = Path(sys.executable).parent
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory) -> Iterator[str]:
    """moto's server mode, its own process on a free port, up within 30 s (else the fixture fails, saying so)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {url} (exit {proc.poll()}, see {log.name})")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def planted(monkeypatch, moto_url) -> dict[str, str]:
    """The secrets of a rotation (old key in the store; new key and AWS credentials in the standard variables)."""
    s = {"old": "sk-old-" + secrets.token_urlsafe(24), "new": "sk-new-" + secrets.token_urlsafe(24),
         "aws_secret": "aws-" + secrets.token_urlsafe(30)}
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", s["new"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING0000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s["aws_secret"])
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # this machine's ~/.aws never takes part
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return s


@pytest.fixture
def mistral(planted):
    """The Mistral API simulator: the new key works, the old one is rejected (401)."""
    with MistralSimulator(api_keys=[planted["new"]]) as sim:
        yield sim


@pytest.fixture
def sm(planted) -> Any:
    """An independent boto3 client on moto: what the store did, read back."""
    import boto3

    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def new_secret(sm: Any, value: str) -> tuple[str, str]:
    """A fresh secret (unique name: the moto server lives for the module) holding `value`: (name, version id)."""
    name = f"prod/mistral-api-key-{secrets.token_hex(4)}"
    resp = sm.create_secret(Name=name, SecretString=value)
    return name, resp["VersionId"]


def stages(sm: Any, name: str) -> dict[str, list[str]]:
    """version id -> its staging labels, as moto holds them."""
    versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    return {v["VersionId"]: sorted(v.get("VersionStages") or []) for v in versions}


def current(sm: Any, name: str, stage: str = "AWSCURRENT") -> str:
    """The value a reader of `stage` gets. Asked by label, as the store and real readers do: moto 5.2 answers a
    GetSecretValue without VersionStage from its own default version, which UpdateSecretVersionStage does not
    move (real Secrets Manager resolves AWSCURRENT by label either way)."""
    return sm.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"]


def assert_no_secret(planted: dict[str, str], *texts: str) -> None:
    assert texts and all(isinstance(t, str) for t in texts)
    for name, value in planted.items():
        for form in (value, base64.b64encode(value.encode()).decode(), value[8:]):
            for text in texts:
                assert form not in text, f"the {name} secret (or its base64) is in an output"


def test_dry_run_tests_the_key_and_changes_nothing(sm, mistral, planted):
    name, v1 = new_secret(sm, planted["old"])
    change = rotate_key(AwsSecretStore(REGION, name), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        operator="alice", incident="INC-7")
    assert change.ok and change.dry_run_ok and not change.applied, change.finding
    assert stages(sm, name) == {v1: ["AWSCURRENT"]}
    assert current(sm, name) == planted["old"]
    assert change.new_key_test["works"] is True and "HTTP 200" in change.new_key_test["seen"]
    assert change.version_before == v1 and change.who == "alice" and change.identity.startswith("arn:aws:")
    assert change.diff[0]["before"] == f"version {v1}: {fingerprint(planted['old'])}, {len(planted['old'])} chars"
    assert fingerprint(planted["new"]) in change.diff[0]["after"]
    assert 'printf %s "$NEW_MISTRAL_API_KEY" | aws secretsmanager put-secret-value' in change.command
    assert f"--secret-id={name}" in change.command and f"--endpoint-url={os.environ['AWS_ENDPOINT_URL']}" in change.command
    assert f"--move-to-version-id={v1}" in change.undo and "DescribeSecret answered" in change.note
    assert_no_secret(planted, json.dumps(change.to_dict()))


def run_cli(require_binary: Any, command: str) -> subprocess.CompletedProcess[str]:
    """A recorded command (`aws secretsmanager ...`, `jq`) run by bash with the real aws CLI first on PATH
    (Debian's awscli: scripts/ensure-servers.sh test), in this test's environment (moto, dummy credentials)."""
    aws = Path(require_binary("aws"))
    require_binary("jq")
    env = {**os.environ, "PATH": f"{aws.parent}:{os.environ.get('PATH', '')}", "AWS_PAGER": ""}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env)


def test_applied_rotation_makes_a_new_current_keeps_the_old_as_previous_and_undo_restores(sm, mistral, planted,
                                                                                      require_binary):
    name, v1 = new_secret(sm, planted["old"])
    change = rotate_key(AwsSecretStore(REGION, name), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        apply_changes=True, operator="alice")
    assert change.applied and change.verified and change.ok, change.finding
    v2 = change.version_after
    assert v2 and v2 != v1 and stages(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    assert current(sm, name) == planted["new"]
    assert current(sm, name, "AWSPREVIOUS") == planted["old"]
    assert change.diff[0]["after"] == f"version {v2}: {fingerprint(planted['new'])}, {len(planted['new'])} chars"
    assert f"Version {v1} is now AWSPREVIOUS" in change.note
    assert_no_secret(planted, json.dumps(change.to_dict()))

    undo = run_cli(require_binary, change.undo)  # the recorded undo, by the real aws CLI
    assert undo.returncode == 0, undo.stderr
    assert current(sm, name) == planted["old"]
    assert stages(sm, name) == {v1: ["AWSCURRENT"], v2: ["AWSPREVIOUS"]}


def test_a_json_field_is_rotated_and_the_other_fields_kept(sm, mistral, planted):
    name, v1 = new_secret(sm, json.dumps({"api-key": planted["old"], "org": "acme"}))
    store = store_spec.make_store(store_spec.parse("secret_store", f"aws://{REGION}/{name}#api-key"))
    dry = rotate_key(store, "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url))
    assert dry.diff[0]["before"] == f"version {v1}: {fingerprint(planted['old'])}, {len(planted['old'])} chars"
    assert "jq" in dry.command and "env.NEW_MISTRAL_API_KEY" in dry.command and stages(sm, name) == {v1: ["AWSCURRENT"]}
    change = rotate_key(store, "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url), apply_changes=True)
    assert change.applied and change.verified, change.finding
    assert json.loads(current(sm, name)) == {"api-key": planted["new"], "org": "acme"}
    assert_no_secret(planted, json.dumps(dry.to_dict()), json.dumps(change.to_dict()))


@pytest.mark.parametrize("field", ["", "api-key"])
def test_the_recorded_command_run_by_the_aws_cli_rotates_as_the_store_does(sm, mistral, planted, require_binary,
                                                                           field):
    """What a reviewer would paste: the dry run's command, run by the real aws CLI (and jq for a JSON field)."""
    old = json.dumps({"api-key": planted["old"], "org": "acme"}) if field else planted["old"]
    name, v1 = new_secret(sm, old)
    dry = rotate_key(AwsSecretStore(REGION, name, key=field), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url))
    assert dry.ok and not dry.applied and stages(sm, name) == {v1: ["AWSCURRENT"]}, dry.finding
    assert planted["new"] not in dry.command
    done = run_cli(require_binary, dry.command)
    assert done.returncode == 0, done.stderr
    new = json.loads(current(sm, name)) if field else current(sm, name)
    assert new == ({"api-key": planted["new"], "org": "acme"} if field else planted["new"])
    v2 = json.loads(done.stdout)["VersionId"]
    assert stages(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    assert_no_secret(planted, done.stderr)


def test_another_writer_between_the_read_and_the_write_is_a_conflict(sm, mistral, planted):
    """PutSecretValue has no check-and-set: the store reads AWSCURRENT again just before writing. Another writer
    puts a version while the store checks its access (DescribeSecret, after the first read): nothing is written."""
    import boto3

    name, v1 = new_secret(sm, planted["old"])
    real = boto3.client("secretsmanager", region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    class RacedClient:  # the real client; the other writer acts while DescribeSecret is asked
        def __getattr__(self, attr: str) -> Any:
            if attr == "describe_secret":
                sm.put_secret_value(SecretId=name, SecretString="sk-someone-else-rotated-it")
            return getattr(real, attr)

    change = rotate_key(AwsSecretStore(REGION, name, client=RacedClient()), "NEW_MISTRAL_API_KEY",
                        test=mistral_key_test(mistral.url), apply_changes=True)
    assert change.finding.status == "conflict" and not change.applied, change.finding
    assert f"not {v1}" in change.finding.message
    assert current(sm, name) == "sk-someone-else-rotated-it" and len(stages(sm, name)) == 2


def test_a_rejected_new_key_is_not_written(sm, mistral, planted, monkeypatch):
    name, v1 = new_secret(sm, planted["old"])
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sk-revoked-" + secrets.token_urlsafe(16))
    change = rotate_key(AwsSecretStore(REGION, name), "NEW_MISTRAL_API_KEY", test=mistral_key_test(mistral.url),
                        apply_changes=True)
    assert not change.applied and change.finding.status == "new_key_rejected"
    assert stages(sm, name) == {v1: ["AWSCURRENT"]}


def test_rotate_key_cli_records_fingerprints_only_in_every_written_file(sm, mistral, planted, tmp_path):
    name, v1 = new_secret(sm, planted["old"])
    out = tmp_path / "outputs"
    folder = out / "20261205T100052Z-INC-9"
    folder.mkdir(parents=True)
    write_index(folder, {"id": "INC-9", "status": "diagnosed", "started_at": "2026-12-05T10:00:52Z",
                         "changes_applied": []})
    base = [str(BIN / "runbook"), "rotate-key", "--store", "aws", "--aws-secret-id", name, "--mistral-url",
            mistral.url, "--incident", "INC-9", "--output-dir", str(out), "--operator", "alice"]
    dry = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert dry.returncode == 0 and "DRY RUN: may write" in dry.stdout, dry.stdout + dry.stderr
    assert stages(sm, name) == {v1: ["AWSCURRENT"]}
    done = subprocess.run(base + ["--apply-changes", "--json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(done.stdout)
    assert record["applied"] and record["verified"] and record["version_before"] == v1
    assert current(sm, name) == planted["new"]
    index = read_index(folder)
    assert [c["applied"] for c in index["secret_store_changes"]] == [False, True]
    assert index["changes_applied"][0]["undo"].startswith("aws secretsmanager update-secret-version-stage")
    assert index["secret_store_changes"][1]["new_key_test"]["fingerprint"] == fingerprint(planted["new"])
    show = subprocess.run([str(BIN / "runbook"), "show", "INC-9", "--output-dir", str(out)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert "rotate key in aws" in show.stdout and "update-secret-version-stage" in show.stdout, show.stdout + show.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert folder / "incident.json" in written
    assert_no_secret(planted, dry.stdout, dry.stderr, done.stdout, done.stderr, show.stdout,
                     *(p.read_bytes().decode("utf-8", "replace") for p in written))


def test_a_missing_secret_and_bad_specs_are_named(sm, mistral, planted):
    test = mistral_key_test(mistral.url)
    missing = rotate_key(AwsSecretStore(REGION, "prod/no-such-secret"), "NEW_MISTRAL_API_KEY", test=test,
                         apply_changes=True)
    assert missing.finding.status == "not_found" and "ResourceNotFoundException" in missing.finding.message
    assert not missing.applied
    for bad in ("aws://eu-west-1/", "aws://Not_A_Region/x", "aws://eu-west-1/x?versionId=1", "aws://u:p@eu-west-1/x",
                "aws://eu-west-1/white space"):
        with pytest.raises(ParameterError, match="secret_store") as exc:
            store_spec.parse("secret_store", bad)
        assert "aws://REGION/SECRET" in str(exc.value)
    with pytest.raises(ParameterError, match="aws_region"):
        AwsSecretStore("us-east-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/k-AbCdEf")
    cli = subprocess.run([str(BIN / "runbook"), "rotate-key", "--store", "aws"], capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode != 0 and "--aws-secret-id" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr


def test_an_unreachable_endpoint_ends_in_a_finding(planted, mistral, dead_port, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port}")
    change = rotate_key(AwsSecretStore(REGION, "prod/mistral-api-key", timeout_s=2), "NEW_MISTRAL_API_KEY",
                        test=mistral_key_test(mistral.url), apply_changes=True)
    assert change.finding.status == "unreachable" and not change.applied
    assert f"127.0.0.1:{dead_port}" in change.finding.message and change.identity == ""
    assert_no_secret(planted, json.dumps(change.to_dict()))


# ---- runbook doctor ------------------------------------------------------------------------------------------
def test_doctor_rows_for_the_secret_stores_say_configured_and_reachable_without_secrets(planted, tmp_path):
    from fake_api_support import FakeServer, vault_app

    token = "hvs." + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "VAULT_"))}
    with FakeServer(vault_app(token)) as vault:
        env.update(VAULT_ADDR=vault.url, VAULT_TOKEN=token)
        out = subprocess.run([str(BIN / "runbook"), "doctor", "--json", "--timeout", "5"], capture_output=True,
                             text=True, timeout=60, env=env, cwd=tmp_path)
        env["VAULT_TOKEN"] = "hvs.not-the-token"
        refused = subprocess.run([str(BIN / "runbook"), "doctor", "--json"], capture_output=True, text=True,
                                 timeout=60, env=env, cwd=tmp_path)
        asked = [r.headers.get("X-Vault-Token") for r in vault.requests if r.path == "/v1/auth/token/lookup-self"]
    assert out.returncode == 0, out.stderr
    rows = {r["integration"]: r for r in json.loads(out.stdout)}
    aws_row, vault_row, gcp_row = rows["aws_secrets_manager"], rows["vault"], rows["gcp_secret_manager"]
    assert aws_row["configured"] and aws_row["reachable"] is True and "ListSecrets" in aws_row["detail"], aws_row
    assert aws_row["settings"]["AWS_REGION"] == REGION and aws_row["settings"]["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"]
    assert fingerprint(planted["aws_secret"]) in aws_row["settings"]["AWS_SECRET_ACCESS_KEY"]
    assert vault_row["configured"] and vault_row["reachable"] is True and "token-runbooks" in vault_row["detail"], vault_row
    assert fingerprint(token) in vault_row["settings"]["VAULT_TOKEN"] and asked == [token, "hvs.not-the-token"]
    assert not gcp_row["configured"] and gcp_row["reachable"] is None
    vault_refused = {r["integration"]: r for r in json.loads(refused.stdout)}["vault"]
    assert vault_refused["reachable"] is False and "403" in vault_refused["detail"], vault_refused
    assert_no_secret({**planted, "vault_token": token}, out.stdout, out.stderr, refused.stdout, refused.stderr)


def test_doctor_aws_row_with_an_unreachable_endpoint_or_refused_credentials(planted, dead_port, monkeypatch):
    from runbook_lib.secretstores.doctor import AwsCheck

    assert AwsCheck().probe(5)[0] is True  # moto accepts any credentials: the same check is green there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port}")
    ok, detail = AwsCheck().probe(2)
    assert ok is False and detail.startswith("unreachable: ") and f"127.0.0.1:{dead_port}" in detail, detail
    monkeypatch.delenv("AWS_REGION")
    conf = AwsCheck().configured()
    assert not conf.ok and conf.missing == ["AWS_REGION"]
    assert_no_secret(planted, detail, json.dumps(conf.settings))


def test_the_core_works_without_boto3(tmp_path, planted):
    code = ("import sys\nsys.modules['boto3'] = None\nsys.modules['botocore'] = None\n"
            "from runbook_lib.cli import main\n"
            "rc = main(['rotate-key', '--store', 'aws', '--aws-secret-id', 'prod/k', '--mistral-url', "
            "'http://127.0.0.1:9', '--timeout', '1'])\n"
            "from runbook_lib.secretstores.doctor import AwsCheck\n"
            "print('RC', rc, AwsCheck().probe(1))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "RC 2 (False, \"boto3 is not installed" in out.stdout, out.stdout + out.stderr
    assert "runbook: boto3 is not installed (an optional integration): .venv/bin/pip install -e '.[aws]'" in out.stderr


# ---- the 401 runbook with secret_store=aws://... -----------------------------------------------------------
class ExternalSecretsSync:
    """What External Secrets does at its refresh (remoteRef property `api-key`), on a thread: copy that field of
    the secret's AWSCURRENT (read by label from moto) into the Kubernetes Secret the pods read when they differ."""

    def __init__(self, kube: Any, sm: Any, name: str, namespace: str = "default") -> None:
        import threading

        self.kube, self.sm, self.name, self.ns = kube, sm, name, namespace
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c = self.kube.cluster
        info = c.info("", "v1", "secrets")
        while not self.stop.wait(0.2):
            value = base64.b64encode(json.loads(current(self.sm, self.name))["api-key"].encode()).decode()
            with c.lock:
                cur = c.get(info, self.ns, "mistral-secrets")
                if cur.setdefault("data", {}).get("api-key") != value:
                    cur["data"]["api-key"] = value
                    c.replace(info, self.ns, "mistral-secrets", cur, False)

    def __enter__(self) -> ExternalSecretsSync:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.mark.notebook
def test_diagnose_auth_rotates_in_aws_waits_for_the_sync_then_restarts(cluster_stack, api_key, planted, sm,
                                                                        monkeypatch, run_runbook):
    from runbook_lib.record import read_records

    st = cluster_stack
    new_key = "sim-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    st.mistral.set_api_keys([new_key])  # the old key is revoked at Mistral
    name, v1 = new_secret(sm, json.dumps({"api-key": api_key, "org": "acme"}))
    dep = st.kube.get("apps/v1/deployments", "mistral-service", "default")
    rev = int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    with ExternalSecretsSync(st.kube, sm, name):
        done = run_runbook("diagnose_auth", st, secret_store=f"aws://{REGION}/{name}#api-key", operator="alice",
                           apply_changes=True)
    assert done.ok, done.error
    rec = read_records(done.notebook_path)
    rot = rec["change_rotate_secret"]
    assert rot["provider"] == "aws" and rot["applied"] and rot["verified"] and rot["version_before"] == v1, rot
    assert rot["diff"][0]["before"] == f"version {v1}: {fingerprint(api_key)}, {len(api_key)} chars"
    assert f"--move-to-version-id={v1}" in rot["undo"]
    assert json.loads(current(sm, name)) == {"api-key": new_key, "org": "acme"}
    assert stages(sm, name)[v1] == ["AWSPREVIOUS"]
    assert rec["secret_sync"]["synced"] is True and rec["change_rollout_restart"]["applied"] is True
    dep = st.kube.get("apps/v1/deployments", "mistral-service", "default")
    assert int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) > rev
    pieces = {k[i:i + 8] for k in (api_key, new_key, planted["aws_secret"]) for i in range(len(k) - 7)}
    files = [p for p in Path(done.record_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files)
    for p in files:
        text = p.read_text("utf-8", errors="replace")
        assert not [piece for piece in pieces if piece in text], f"{p.name} holds a piece of a key"
