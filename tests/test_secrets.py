import hashlib

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.secrets import (MIN_SECRET_LEN, check_no_secret_values, fingerprint, read_secret,
                                secret_env_values)


def test_fingerprint_is_short_sha256_not_a_prefix():
    key = "abcdefghijklmnopqrstuvwx12345678"
    fp = fingerprint(key)
    assert fp == "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    assert key[:4] not in fp


def test_read_secret_present_hides_value_everywhere_but_reveal():
    key = "Zq9XkT2mLp8VwR4sNb6YcH1dFg3JeA5u"
    ref = read_secret("MY_KEY", {"MY_KEY": key})
    assert ref.present and ref.length == len(key) and ref.reveal() == key
    for shown in (repr(ref), str(ref), str(ref.describe())):
        assert key not in shown
        assert key[:8] not in shown


def test_read_secret_absent_or_blank():
    assert not read_secret("NOPE", {}).present
    blank = read_secret("BLANK", {"BLANK": "   "})
    assert not blank.present and blank.fingerprint is None and "absent" in str(blank)


def test_two_keys_are_told_apart_by_fingerprint():
    a, b = read_secret("A", {"A": "key-one"}), read_secret("B", {"B": "key-two"})
    assert a.fingerprint != b.fingerprint


# -- a secret's value is never a parameter (the CLI's check and every notebook's first call) -------------
KEY = "sk-planted-0123456789abcdef"


def test_a_parameter_holding_a_secret_is_refused_naming_it_never_showing_it():
    env = {"MISTRAL_API_KEY": KEY, "OTHER": "not-a-secret-name-1234"}
    with pytest.raises(ParameterError) as err:
        check_no_secret_values({"incident_id": "INC-1", "operator": f"alice {KEY}"}, env)
    assert err.value.name == "operator" and "MISTRAL_API_KEY" in str(err.value)
    assert not [KEY[i:i + 8] for i in range(len(KEY) - 7) if KEY[i:i + 8] in str(err.value)]
    check_no_secret_values({"operator": "alice", "api_key_env": "MISTRAL_API_KEY",
                            "note": "not-a-secret-name-1234"}, env)  # a value of a non-secret variable is fine


@pytest.mark.parametrize("parameters, env, refused", [
    ({"api_key_env": "MY_VAR", "operator": "xyz-my-own-key-value"}, {"MY_VAR": "xyz-my-own-key-value"}, "operator"),
    ({"extra_secret_envs": "A_VAR, B_VAR", "selector": "app=bbbbbbbbbb"}, {"B_VAR": "bbbbbbbbbb"}, "selector"),
    ({"labels": {"k": ["x", "token-9876543210"]}}, {"GITHUB_TOKEN": "token-9876543210"}, "labels"),
    ({"slack_webhook_env": "HOOK", "operator": "https://hooks.example/T0/B0/xyz"},
     {"HOOK": "https://hooks.example/T0/B0/xyz"}, "operator"),
])
def test_secrets_are_found_by_variable_name_pattern_by_parameter_and_inside_nested_values(parameters, env, refused):
    with pytest.raises(ParameterError) as err:
        check_no_secret_values(parameters, env)
    assert err.value.name == refused


def test_short_secret_values_are_not_matched():
    """Values under MIN_SECRET_LEN (e.g. "true", "default") are too common to refuse."""
    check_no_secret_values({"namespace": "default"}, {"MISTRAL_API_KEY": "default"})
    assert secret_env_values({}, {"MISTRAL_API_KEY": "x" * (MIN_SECRET_LEN - 1)}) == {}


def test_every_notebook_first_call_refuses_before_recording_anything(monkeypatch):
    """The check is in the runbooks' `start` (the first cell's call), so raw papermill and JupyterLab
    runs are refused too; nothing is recorded or contacted before it (mistral_url is unreachable)."""
    from runbook_lib import record
    from runbook_lib.runbooks import diagnose_server_error, evidence, postmortem, triage

    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    record.LOCAL.clear()
    calls = [
        lambda: triage.start(mistral_url="http://127.0.0.1:9", api_key_env="MISTRAL_API_KEY",
                             service_health_url="", operator=KEY),
        lambda: diagnose_server_error.start(status_feed_url="http://127.0.0.1:9/feed.rss", monitor_interval_s=1.0,
                                            monitor_max_s=1.0, healthy_needed=1, probe_samples=1,
                                            incident_commander=KEY),
        lambda: evidence.start(incident_folder="", window_start="", window_end="", margin="15m", prometheus_url="",
                               kubeconfig="", kube_context="", namespace="default", selector="app=x",
                               deployment="x", api_key_env="MISTRAL_API_KEY", extra_secret_envs="",
                               timeout_s=1.0, incident_id=f"INC-{KEY}"),
        lambda: postmortem.start(source=KEY, min_error_ratio=0.05, min_errors=1, max_gap_steps=2),
    ]
    refused = []
    for call in calls:
        with pytest.raises(ParameterError) as err:
            call()
        refused.append(err.value.name)
        assert KEY not in str(err.value)
    assert refused == ["operator", "incident_commander", "incident_id", "source"]
    assert record.LOCAL == {}


def test_the_cli_and_the_notebooks_share_one_guard():
    from runbook_lib.run import execute

    assert execute.check_no_secret_values is check_no_secret_values
