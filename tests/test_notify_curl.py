"""The dry run's curl commands, run by the real curl (through bash) against the local stand-ins: each is
accepted, and the service receives exactly the body the client would send (shell-special text included),
with the credential taken from its variable, never written in the command.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from notify_support import PD_KEY, SLACK_TOKEN, SP_KEY, configure, fixtures
from runbook_lib.notify import base
from runbook_lib.notify.pagerduty import PagerDuty
from runbook_lib.notify.slack import SlackWebApi
from runbook_lib.notify.statuspage import Statuspage

fakes, clean_env = fixtures()
TRICKY = 'down $HOME `id` back\\slash "quoted" \'single\' & <b> ünïcode\nsecond line'


def _run(command: str) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is part of the test tools (scripts/ensure-servers.sh)"
    env = {**os.environ, "CURL_CA_BUNDLE": os.environ["SSL_CERT_FILE"]}  # curl's own name for the test CA
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize("provider,service,secret", [(PagerDuty, "pagerduty", PD_KEY),
                                                     (SlackWebApi, "slack", SLACK_TOKEN),
                                                     (Statuspage, "statuspage", SP_KEY)])
def test_curl_sends_the_same_request(fakes, monkeypatch, provider, service, secret):
    configure(monkeypatch, fakes, "pagerduty", "slack", "statuspage")
    update = base.Update("INC-C1", "INVESTIGATING", "P2", "network", f"*P2* {TRICKY}", f"Slow\n{TRICKY}",
                         facts={"impact": TRICKY})
    (planned,) = provider().plan(update, [])
    command = planned.curl()
    assert secret not in command and command.startswith("curl ")
    done = _run(command)
    assert done.returncode == 0, done.stdout + done.stderr
    (by_curl,) = fakes.of(service)
    fakes.reset()
    (sent,) = base.dispatch(update, [], approved=True, timeout_s=5, providers=[provider()])
    (by_client,) = fakes.of(service)
    assert sent.ok and by_curl["body"] == by_client["body"]
    assert by_curl["headers"].get("Authorization") == by_client["headers"].get("Authorization")
    assert any(TRICKY in str(v) for v in _walk(by_curl["body"]))  # the text arrived as written


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_a_lookup_request_has_no_curl_only_the_lookup(fakes, monkeypatch):
    configure(monkeypatch, fakes, "pagerduty", "pagerduty_notes")
    history = [{"channel": "pagerduty", "sent": True, "ok": True, "action": "trigger", "severity": "P2",
                "status": "INVESTIGATING"}]
    _, note = PagerDuty().plan(base.Update("INC-C2", "INVESTIGATING", "P1", "network", "x", "y"), history)
    assert note.curl() == "" and "# {incident} found by: GET" in note.shown()
