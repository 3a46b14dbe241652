"""`runbook doctor` (the real CLI, in a subprocess): which integrations are configured and reachable, exit 0,
and never a planted secret in what it prints (table or JSON), only fingerprints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from notify_support import ALL_ENV, PD_API_TOKEN, PD_KEY, SECRETS, SLACK_CHANNEL, SLACK_TOKEN, SP_KEY, SP_PAGE, WEBHOOK_PATH, fixtures
from runbook_lib.secrets import fingerprint

fakes, clean_env = fixtures()
RUNBOOK = [sys.executable, "-m", "runbook_lib"]


def _doctor(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ALL_ENV and k != "SSL_CERT_FILE"
           and not k.startswith(("VAULT_", "AWS_", "GOOGLE_"))}  # the secret stores' rows (issue 18) stay "no"
    env.update(env_extra)
    return subprocess.run([*RUNBOOK, "doctor", "--timeout", "3", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)


def _configured_env(fakes) -> dict[str, str]:
    return {"SSL_CERT_FILE": fakes.ca,
            "PAGERDUTY_ROUTING_KEY": PD_KEY, "PAGERDUTY_EVENTS_URL": fakes.base,
            "PAGERDUTY_API_TOKEN": PD_API_TOKEN, "PAGERDUTY_FROM": "oncall@example.com", "PAGERDUTY_API_URL": fakes.base,
            "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_CHANNEL": SLACK_CHANNEL, "SLACK_API_URL": fakes.base + "/api/",
            "SLACK_WEBHOOK_URL": fakes.base + WEBHOOK_PATH,
            "STATUSPAGE_API_KEY": SP_KEY, "STATUSPAGE_PAGE_ID": SP_PAGE, "STATUSPAGE_API_URL": fakes.base + "/v1"}


def _no_secret(out: str) -> None:
    assert out.strip()
    for value in SECRETS:
        assert value not in out and value[-12:] not in out and value[:12] not in out, value[:4]


def test_nothing_configured_is_a_clean_answer(fakes):
    done = _doctor({})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:5]}
    assert rows == {"slack_webhook": ["no", "-"], "slack_api": ["no", "-"], "pagerduty": ["no", "-"],
                    "statuspage": ["no", "-"]}
    assert "0 of 8 integrations configured" in done.stdout and fakes.seen == []


def test_configured_and_reachable_with_fingerprints_only(fakes):
    done = _doctor(_configured_env(fakes))
    assert done.returncode == 0, done.stderr
    _no_secret(done.stdout + done.stderr)
    rows = {line.split()[0]: line.split()[1:3] for line in done.stdout.splitlines()[1:5]}
    assert rows == {name: ["yes", "yes"] for name in ("slack_webhook", "slack_api", "pagerduty", "statuspage")}
    for value in (PD_KEY, SLACK_TOKEN, SP_KEY):
        assert fingerprint(value) in done.stdout
    assert "auth.test ok: team Incident Team" in done.stdout and "live webhook; nothing posted" in done.stdout
    assert "reachable (HTTP 405" in done.stdout  # the Events API answers a GET; only sending checks a key
    assert "notes: REST API token accepted" in done.stdout and fingerprint(PD_API_TOKEN) in done.stdout
    assert {s["service"] for s in fakes.seen} == {"slack", "webhook", "statuspage", "pagerduty_rest"}
    assert not fakes.of("pagerduty")
    assert [s["body"] for s in fakes.of("webhook")] in ([{}], [None])  # the webhook probe posts no message


def test_json_and_failures_still_secret_free(fakes):
    env = _configured_env(fakes)
    env.update(STATUSPAGE_API_KEY="wrong-statuspage-key-" + SP_KEY[::-1], SLACK_BOT_TOKEN="xoxb-not-" + SLACK_TOKEN[5:],
               PAGERDUTY_EVENTS_URL="https://127.0.0.1:9", SLACK_WEBHOOK_URL="https://127.0.0.1:9" + WEBHOOK_PATH)
    done = _doctor(env, "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["integration"]: r for r in json.loads(done.stdout)}
    assert {k: (r["configured"], r["reachable"]) for k, r in rows.items()} == {
        "slack_webhook": (True, False), "slack_api": (True, False), "pagerduty": (True, False),
        "statuspage": (True, False), "grafana": (False, None),  # Grafana and the secret stores not configured here
        "vault": (False, None), "gcp_secret_manager": (False, None), "aws_secrets_manager": (False, None)}
    assert rows["statuspage"]["detail"] == f"GET /pages/{SP_PAGE} answered HTTP 401"
    assert rows["slack_api"]["detail"].startswith("auth.test refused: invalid_auth")
    _no_secret(done.stdout + done.stderr)
    for value in (env["STATUSPAGE_API_KEY"], env["SLACK_BOT_TOKEN"]):
        assert value not in done.stdout and fingerprint(value) in done.stdout


def test_bad_options_are_named(fakes):
    done = _doctor({}, "--timeout", "0")
    assert done.returncode == 2 and "'--timeout'" in done.stderr and "> 0 and <= 60" in done.stderr
    planted = "https://hooks.slack.com/services/T0001/B0001/" + "x" * 24
    done = _doctor({}, "--webhook-env", planted)
    assert done.returncode == 2 and "'--webhook-env'" in done.stderr and planted not in done.stderr
