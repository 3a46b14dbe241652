import math

import pytest

from runbook_lib import params
from runbook_lib.errors import ParameterError


@pytest.mark.parametrize("value", ["http://127.0.0.1:18080", "https://api.mistral.ai", "https://api.mistral.ai/"])
def test_url_accepts_absolute_http_urls(value):
    assert params.url("mistral_url", value) == value.rstrip("/")


@pytest.mark.parametrize("value", ["", "api.mistral.ai", "ftp://x", "http://", "http://a b", 5, None,
                                   "http://127.0.0.1:99999", "javascript:alert(1)"])
def test_url_rejects_with_the_parameter_named(value):
    with pytest.raises(ParameterError) as err:
        params.url("mistral_url", value)
    assert "'mistral_url'" in str(err.value) and "absolute URL" in str(err.value)


def test_url_with_credentials_is_rejected_without_echoing_them():
    with pytest.raises(ParameterError) as err:
        params.url("mistral_url", "https://user:hunter2secret@api.mistral.ai")
    assert "hunter2secret" not in str(err.value)


def test_url_optional_empty():
    assert params.url("prometheus_url", "", allow_empty=True) == ""


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, 10_000, "5", True, None])
def test_timeout_rejects_unbounded_or_wrong_types(value):
    with pytest.raises(ParameterError, match="'timeout_s'.*seconds > 0"):
        params.timeout("timeout_s", value)


def test_timeout_accepts_ints_and_floats():
    assert params.timeout("timeout_s", 5) == 5.0
    assert params.timeout("timeout_s", 0.25) == 0.25


@pytest.mark.parametrize("value", ["prod", "a", "mistral-service", "x" * 63])
def test_namespace_ok(value):
    assert params.namespace("namespace", value) == value


@pytest.mark.parametrize("value", ["Prod", "-a", "a-", "a_b", "x" * 64, "", "a.b", "../etc"])
def test_namespace_rejects_non_dns1123(value):
    with pytest.raises(ParameterError, match="'namespace'.*DNS-1123"):
        params.namespace("namespace", value)


@pytest.mark.parametrize("value", ["app=mistral-service", "app==x,tier!=db", "env in (prod, staging)",
                                   "!canary", "app.kubernetes.io/name=mistral"])
def test_label_selector_ok(value):
    assert params.label_selector("label_selector", value) == value


@pytest.mark.parametrize("value", ["", "app=", "=x", "app=x;rm -rf /", "app in prod", 3])
def test_label_selector_rejects(value):
    if value == "app=":  # an empty value is legal in Kubernetes
        assert params.label_selector("label_selector", value)
        return
    with pytest.raises(ParameterError, match="'label_selector'"):
        params.label_selector("label_selector", value)


def test_env_var_name_hides_what_looks_like_a_pasted_key():
    key = "sk-live-9f8e7d6c5b4a39281706"
    with pytest.raises(ParameterError) as err:
        params.env_var_name("api_key_env", key)
    assert key not in str(err.value) and "<hidden>" in str(err.value)
    assert "never the key itself" in str(err.value)


@pytest.mark.parametrize("value", ["INC-1234", "demo.rate_limited", "a"])
def test_incident_id_ok(value):
    assert params.incident_id("incident_id", value) == value


@pytest.mark.parametrize("value", ["../x", "a/b", ".hidden", "-x", "a..b", "", "x" * 65, "a b", 7])
def test_incident_id_rejects_path_tricks(value):
    with pytest.raises(ParameterError, match="'incident_id'"):
        params.incident_id("incident_id", value)


def test_positive_int_and_choice_and_text():
    assert params.positive_int("samples", 3, maximum=20) == 3
    with pytest.raises(ParameterError, match="'samples'.*1 to 20"):
        params.positive_int("samples", 0, maximum=20)
    with pytest.raises(ParameterError, match="one of a, b"):
        params.choice("mode", "c", ("a", "b"))
    with pytest.raises(ParameterError, match="'operator'"):
        params.text("operator", "two\nlines")


@pytest.mark.parametrize("value", ["5m", "30s", "1h", "1000s"])
def test_prom_duration_ok(value):
    assert params.prom_duration("metrics_window", value) == value


@pytest.mark.parametrize("value", ["0s", "5", "5d", "5m]) or vector(1", "", 5])
def test_prom_duration_rejects_anything_that_is_not_a_plain_range(value):
    with pytest.raises(ParameterError, match="'metrics_window'.*Prometheus duration"):
        params.prom_duration("metrics_window", value)
