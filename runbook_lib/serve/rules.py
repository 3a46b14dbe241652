"""The Prometheus alerting rules for the Mistral integration, rendered for a team's labels.

One alert per *service*, not one for everything: every expression aggregates `by (<service labels>)`,
the labels that identify one service calling Mistral (default: cluster, namespace, service, what the
Prometheus Operator's ServiceMonitors attach plus a cluster label). `runbook serve` correlates
alerts per service on the same labels, and its label map turns them into runbook parameters.
`deploy/prometheus/mistral-rules.yml` is `render_rules()` with the defaults (a test holds them
equal); `runbook rules` renders the file for other labels and a team's runbook base URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .. import params
from ..errors import ParameterError

DEFAULT_SERVICE_LABELS: tuple[str, ...] = ("cluster", "namespace", "service")
# where the repository's files can be browsed; `notebooks/<runbook>.ipynb` is appended
DEFAULT_RUNBOOK_BASE_URL = "https://git.example.com/ops/mistral-runbooks/blob/main"
DEFAULT_AUTH_MIN_REQUESTS = 10  # calls in the 5 m window below which 401/403 do not page
# -- dashboard annotation (issue 18, Grafana): each alert links the Grafana dashboard
# (deploy/grafana/mistral-dashboard.json, uid mistral-integration) filtered on the alerting service
DEFAULT_DASHBOARD_URL = "https://grafana.example.com/d/mistral-integration"
WINDOW = "5m"

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# labels the expressions aggregate away or the rules set themselves: not a service's identity
_RESERVED = {"alertname", "severity", "error_class", "code", "model", "le", "instance", "pod"}


@dataclass(frozen=True)
class RulesConfig:
    """What a team chooses: the labels of one service, where runbooks are browsed, the auth guard."""

    service_labels: tuple[str, ...] = DEFAULT_SERVICE_LABELS
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    auth_min_requests: int = DEFAULT_AUTH_MIN_REQUESTS
    dashboard_url: str = DEFAULT_DASHBOARD_URL  # "" = no `dashboard` annotation


def service_labels(name: str, value: object) -> tuple[str, ...]:
    """Validate a service-label list (`a,b,c` or a sequence); ParameterError naming `name` otherwise."""
    accepted = ("Prometheus label names, comma-separated, at least one, no duplicates, none of "
                + ", ".join(sorted(_RESERVED)) + ", none starting with __; e.g. cluster,namespace,service")
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ParameterError(name, value, accepted)
    if not items or any(not isinstance(v, str) or not _LABEL.match(v) or v.startswith("__") or v in _RESERVED
                        for v in items) or len(set(items)) != len(items):
        raise ParameterError(name, value, accepted)
    return tuple(items)


def rules_config(*, labels: object = DEFAULT_SERVICE_LABELS, base_url: object = DEFAULT_RUNBOOK_BASE_URL,
                 auth_min_requests: object = DEFAULT_AUTH_MIN_REQUESTS,
                 dashboard_url: object = DEFAULT_DASHBOARD_URL) -> RulesConfig:
    """A checked RulesConfig; each error names the `runbook rules` option to fix."""
    return RulesConfig(service_labels=service_labels("--service-labels", labels),
                       runbook_base_url=params.url("--runbook-base-url", base_url),
                       auth_min_requests=params.positive_int("--auth-min-requests", auth_min_requests,
                                                             maximum=1_000_000),
                       dashboard_url=params.url("--dashboard-url", dashboard_url) if dashboard_url else "")


def _rule(alert: str, expr: str, for_: str, severity: str, error_class: str, summary: str, description: str,
          runbook: str, config: RulesConfig) -> str:
    body = "\n".join("          " + line for line in expr.strip().splitlines())
    return (f"      - alert: {alert}\n"
            f"        expr: |\n{body}\n"
            f"        for: {for_}\n"
            f"        labels:\n"
            f"          severity: {severity}\n"
            f"          error_class: {error_class}\n"
            f"        annotations:\n"
            f"          summary: {_quote(summary)}\n"
            f"          description: {_quote(description)}\n"
            f"          runbook: {runbook}\n"
            f"          runbook_url: {config.runbook_base_url}/notebooks/{runbook}.ipynb\n"
            + _dashboard_annotation(config))


def _dashboard_annotation(config: RulesConfig) -> str:
    """`dashboard`: the Grafana dashboard with its variables set to the alerting service's labels."""
    if not config.dashboard_url:
        return ""
    query = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in config.service_labels)
    return f"          dashboard: {_quote(config.dashboard_url.rstrip('/') + '?' + query)}\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_rules(config: RulesConfig | None = None) -> str:
    """The rules file's text for `config` (defaults: the shipped file, byte for byte)."""
    c = config or RulesConfig()
    by = ", ".join(c.service_labels)
    calls = f"sum by ({by}) (rate(mistral_requests_total[{WINDOW}]))"

    def ratio(selector: str) -> str:
        return f"sum by ({by}) (rate(mistral_errors_total{selector}[{WINDOW}]))\n  / {calls}"

    rules = [
        _rule("MistralErrorRateHigh", ratio("") + " > 0.05", "2m", "page", "any",
              "Mistral error ratio {{ $value | humanizePercentage }} over 5m",
              "More than 5% of calls to the Mistral API fail. Start with triage.", "triage", c),
        _rule("MistralRateLimited", ratio('{code="429"}') + " > 0.02", "2m", "ticket", "rate_limit",
              "{{ $value | humanizePercentage }} of Mistral calls get 429",
              "Rate limited or tier capacity exceeded: read the rate-limit headers, reduce concurrency.",
              "diagnose_rate_limit", c),
        _rule("MistralServerErrors", ratio('{code=~"5.."}') + " > 0.05", "2m", "page", "provider_error",
              "{{ $value | humanizePercentage }} of Mistral calls get 5xx",
              "Mistral service issue: check the status page, enable fallback, monitor recovery.",
              "diagnose_server_error", c),
        _rule("MistralAuthFailures",
              ratio('{code=~"401|403"}') + " > 0\n"
              f"and\nsum by ({by}) (increase(mistral_requests_total[{WINDOW}])) >= {c.auth_min_requests}",
              "1m", "page", "auth",
              "{{ $value | humanizePercentage }} of Mistral calls are rejected with 401/403",
              "The API key in use is invalid, revoked or lacks permission "
              f"(counted only with at least {c.auth_min_requests} calls in {WINDOW}).", "diagnose_auth", c),
        _rule("MistralLatencyP95High",
              f"histogram_quantile(0.95, sum by ({by}, le) (rate(mistral_request_duration_seconds_bucket[{WINDOW}])))"
              " > 5", "5m", "ticket", "network",
              "Mistral p95 latency {{ $value | humanizeDuration }}",
              "Calls to Mistral are slow: check DNS, TCP, TLS and timeouts.", "diagnose_network", c),
    ]
    header = ("# Alerting rules for the Mistral AI integration, one alert per service: every expression\n"
              f"# aggregates by ({by}), the labels that identify a service (alerts of two\n"
              "# services never merge; `runbook serve` correlates and maps parameters on the same labels).\n"
              "# Each alert names the runbook notebook that handles it (`runbook`, and `runbook_url`).\n"
              "# GENERATED by `runbook rules`: to change the labels, the runbook base URL or the auth\n"
              "# guard, render it again, e.g.\n"
              "#   runbook rules --service-labels cluster,namespace,app \\\n"
              "#       --runbook-base-url https://git.example.com/ops/mistral-runbooks/blob/main > mistral-rules.yml\n"
              f"# This file: --service-labels {','.join(c.service_labels)} --runbook-base-url {c.runbook_base_url}"
              f" --auth-min-requests {c.auth_min_requests}"
              + (f" --dashboard-url {c.dashboard_url}" if c.dashboard_url else " --dashboard-url ''") + "\n")
    return header + "groups:\n  - name: mistral-integration\n    rules:\n" + "".join(rules)
