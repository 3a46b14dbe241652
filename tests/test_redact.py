"""Redaction: planted secrets of every kind go in, none comes out, fingerprints tell them apart."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from runbook_lib import redact
from runbook_lib.secrets import fingerprint


def _pieces(value: str) -> set[str]:
    return {value[i:i + 8] for i in range(len(value) - 7)}


def _assert_absent(text: str, *values: str) -> None:
    for v in values:
        leaked = [p for p in _pieces(v) if p in text]
        assert not leaked, f"pieces of a planted secret survived: {leaked}"


@pytest.fixture
def planted():
    return {
        "api_key": "sim-" + secrets.token_urlsafe(24),
        "bearer": secrets.token_urlsafe(20),
        "x_api_key": secrets.token_hex(16),
        "sk": "sk-" + secrets.token_hex(16),
        "url_password": "pw" + secrets.token_hex(8),
        "json_token": secrets.token_hex(12),
    }


def test_log_lines_with_every_kind_of_secret(planted):
    p = planted
    lines = "\n".join([
        f'{{"level":"error","msg":"upstream 401","headers":{{"Authorization":"Bearer {p["bearer"]}"}}}}',
        f"curl -H 'X-Api-Key: {p['x_api_key']}' https://api.mistral.ai/v1/models",
        f"config loaded: upstream key {p['sk']}",
        f"db=postgres://app:{p['url_password']}@db:5432/prod",
        f'{{"api_token": "{p["json_token"]}"}}',
        f"debug: using {p['api_key']} for mistral",           # the current key, bare
        f"secret data: {base64.b64encode(p['api_key'].encode()).decode()}",   # ...and base64
    ])
    out = redact.redact_text(lines, secrets=[p["api_key"]])
    _assert_absent(out, *p.values())
    assert f"[REDACTED {fingerprint(p['api_key'])}]" in out  # same key, same fingerprint, both forms
    assert out.count(fingerprint(p["api_key"])) == 2
    assert "upstream 401" in out and "https://api.mistral.ai/v1/models" in out  # the rest is kept


def test_kubernetes_objects_from_the_emulator(planted):
    from runbook_lib.sim.kube import KubeEmulator

    with KubeEmulator(api_key=planted["api_key"]) as emu:
        secret = emu.get("v1/secrets", "mistral-secrets", "default")
        deployment = emu.get("apps/v1/deployments", "mistral-service", "default")
        literals = list(emu.literal_secret_values.values())
    deployment.setdefault("metadata", {}).setdefault("annotations", {})[redact.LAST_APPLIED] = json.dumps(
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
            {"name": "SENTRY_TOKEN", "value": literals[0]}]}]}}}})
    out = json.dumps(redact.redact_object([secret, deployment], secrets=[planted["api_key"]]))
    _assert_absent(out, planted["api_key"], base64.b64encode(planted["api_key"].encode()).decode(), *literals)
    assert fingerprint(planted["api_key"]) in out       # the Secret's key, recognisable by fingerprint
    assert '"name": "MISTRAL_TIMEOUT"' in out and "mistral-service" in out  # non-secret content kept


def test_distinct_values_get_distinct_fingerprints_and_display_scrub_is_plain():
    a, b = redact.redact_text("token=aaaaaaaaaaaa1"), redact.redact_text("token=bbbbbbbbbbbb2")
    assert a != b and a.startswith("token=[REDACTED sha256:")
    assert redact.scrub("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [REDACTED]"
