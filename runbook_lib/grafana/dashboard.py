"""The Grafana dashboard for the Mistral integration (`deploy/grafana/mistral-dashboard.json`).

Built with `grafana-foundation-sdk` (pinned: its 11.6 line, dashboard schemaVersion 41), Grafana Labs' own
builders generated from Grafana's dashboard
schema (grafanalib, the older community library, had its last release in January 2024): the
panel, field-config and variable types are the schema's, so a misspelt field is a Python error
rather than a dashboard Grafana silently ignores. The shipped file is `render_dashboard()` with the
defaults (a test holds them equal, and runs every panel's query on a real Prometheus).

What it shows, per service (the same labels `runbook rules` aggregates by, as variables): calls and
errors per second by model and HTTP code, the error / 5xx / 429 ratios over the alerts' own 5 m
window, p50/p95/p99 latency, and each alert's threshold as a dashed line. The thresholds are read
from the rendered alerting rules, so the lines cannot drift from what pages.
`runbook dashboard` renders it for other service labels (the SDK is needed only there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import MissingDependency

DASHBOARD_UID = "mistral-integration"
DASHBOARD_TITLE = "Mistral API integration"
ANNOTATION_TAG = "mistral-runbooks"  # every annotation `grafana.annotations` posts carries it
# Grafana interpolates these before the query reaches Prometheus; `interpolate` does the same for tests
RATE_INTERVAL = "$__rate_interval"
ALERT_WINDOW = "5m"  # the window the alerting rules use (serve/rules.py WINDOW)
# alert -> panel whose threshold line shows it
THRESHOLD_ALERTS = {"MistralErrorRateHigh": 3, "MistralServerErrors": 3, "MistralRateLimited": 4,
                    "MistralLatencyP95High": 5}


def alert_thresholds(rules_text: str | None = None) -> dict[str, float]:
    """alert name -> the value its expression compares against (`... > X`), from the rendered rules."""
    import yaml

    from ..serve.rules import render_rules

    rules = yaml.safe_load(rules_text if rules_text is not None else render_rules())["groups"][0]["rules"]
    out: dict[str, float] = {}
    for rule in rules:
        m = re.search(r">\s*([0-9.]+)$", rule["expr"].strip())
        if rule["alert"] in THRESHOLD_ALERTS and m:
            out[rule["alert"]] = float(m.group(1))
    return out


def _selector(labels: Sequence[str], extra: str = "") -> str:
    matchers = [f'{label}=~"${label}"' for label in labels] + ([extra] if extra else [])
    return "{" + ", ".join(matchers) + "}"


def panel_queries(service_labels: Sequence[str]) -> dict[int, list[tuple[str, str]]]:
    """panel id -> [(legend, PromQL)]: every query the dashboard sends, before Grafana's interpolation."""
    by = ", ".join(service_labels)
    legend = "/".join("{{" + label + "}}" for label in service_labels)
    sel = _selector(service_labels)
    calls = f"sum by ({by}) (rate(mistral_requests_total{sel}[{ALERT_WINDOW}]))"

    def ratio(extra: str) -> str:
        return f"sum by ({by}) (rate(mistral_errors_total{_selector(service_labels, extra)}[{ALERT_WINDOW}])) / {calls}"

    def quantile(q: str, group: str) -> str:
        return (f"histogram_quantile({q}, sum by ({group}, le) "
                f"(rate(mistral_request_duration_seconds_bucket{sel}[{RATE_INTERVAL}])))")

    return {
        1: [("{{model}} {{code}}", f"sum by (model, code) (rate(mistral_requests_total{sel}[{RATE_INTERVAL}]))")],
        2: [("{{model}} {{code}}", f"sum by (model, code) (rate(mistral_errors_total{sel}[{RATE_INTERVAL}]))")],
        3: [(f"all errors {legend}", ratio("")), (f"5xx {legend}", ratio('code=~"5.."'))],
        4: [(f"429 {legend}", ratio('code="429"'))],
        5: [(f"p{q[2:].ljust(2, '0')} {legend}", quantile(q, by)) for q in ("0.5", "0.95", "0.99")],
        6: [("p95 {{model}}", quantile("0.95", "model"))],
    }


def interpolate(expr: str, service_labels: Sequence[str], rate_interval: str = "1m") -> str:
    """The query as Grafana sends it with every variable at "All" (allValue `.*`)."""
    out = expr.replace(RATE_INTERVAL, rate_interval)
    for label in service_labels:
        out = out.replace(f'"${label}"', '".*"')
    return out


def render_dashboard(service_labels: Sequence[str] | None = None, rules_text: str | None = None) -> str:
    """The dashboard JSON (indented, sorted keys, final newline) for `service_labels`."""
    try:
        from grafana_foundation_sdk.builders import dashboard as dash, prometheus, timeseries
        from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, VizLegendOptions
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, LegendDisplayMode, LegendPlacement
        from grafana_foundation_sdk.models.dashboard import (DataSourceRef, Threshold, ThresholdsMode, VariableRefresh,
                                                             VariableSort)
    except ImportError:
        raise MissingDependency("grafana-foundation-sdk", "grafana") from None

    from ..serve.rules import DEFAULT_SERVICE_LABELS

    labels = tuple(service_labels or DEFAULT_SERVICE_LABELS)
    thresholds = alert_thresholds(rules_text)
    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    queries = panel_queries(labels)

    def panel(pid: int, title: str, description: str, unit: str, alerts: Sequence[str] = ()) -> Any:
        p = (timeseries.Panel().id(pid).title(title).description(description).unit(unit).datasource(ds)
             .height(8).span(12).legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
                                        .placement(LegendPlacement.BOTTOM).show_legend(True)))
        for i, (legend_format, expr) in enumerate(queries[pid]):
            p.with_target(prometheus.Dataquery().ref_id(chr(ord("A") + i)).expr(expr).legend_format(legend_format)
                          .range().datasource(ds))
        values = sorted({thresholds[a] for a in alerts})
        if values:  # one dashed red line per alert threshold (the "base" step draws no line)
            steps = [Threshold(value=None, color="green")] + [Threshold(value=v, color="red") for v in values]
            p.thresholds(dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
            p.thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
        return p

    def line(alerts: Sequence[str]) -> str:
        return "; ".join(f"{a} at {thresholds[a]:g}" for a in alerts)

    board = (dash.Dashboard(DASHBOARD_TITLE).uid(DASHBOARD_UID).tags(["mistral", ANNOTATION_TAG])
             .description("Calls from our services to the Mistral API: rates, error ratios, latency, with the alert "
                          "thresholds as dashed lines and the incident annotations mistral-runbooks posts. "
                          "GENERATED by `runbook dashboard` (runbook_lib/grafana/dashboard.py).")
             .time("now-6h", "now").refresh("30s").timezone("utc").editable()
             .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for label in labels:
        board.with_variable(dash.QueryVariable(label).label(label).datasource(ds)
                            .query(f"label_values(mistral_requests_total, {label})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                            .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True).all_value(".*"))
    board.annotation(dash.AnnotationQuery().name("Incidents (mistral-runbooks)").enable(True).icon_color("red")
                     .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --")).type("dashboard")
                     .target(dash.AnnotationTarget().limit(100).match_any(False).tags([ANNOTATION_TAG]).type("dashboard")))
    alerts_ratio = ("MistralErrorRateHigh", "MistralServerErrors")
    for p in (
        panel(1, "Calls/s by model and code", "rate(mistral_requests_total) by model and HTTP code (000 = no "
              "response).", "reqps"),
        panel(2, "Errors/s by model and code", "rate(mistral_errors_total) by model and code.", "reqps"),
        panel(3, "Error ratio (all, 5xx) over 5m", "The ratios MistralErrorRateHigh and MistralServerErrors alert on; "
              f"dashed: {line(alerts_ratio)}.", "percentunit", alerts_ratio),
        panel(4, "429 ratio over 5m", f"The ratio MistralRateLimited alerts on; dashed: "
              f"{line(['MistralRateLimited'])}.", "percentunit", ["MistralRateLimited"]),
        panel(5, "Latency p50 / p95 / p99", "histogram_quantile over mistral_request_duration_seconds; dashed: "
              f"{line(['MistralLatencyP95High'])} (p95 over 5m).", "s", ["MistralLatencyP95High"]),
        panel(6, "p95 latency by model", "Which model is slow; dashed: "
              f"{line(['MistralLatencyP95High'])} (the alert is per service).", "s", ["MistralLatencyP95High"]),
    ):
        board.with_panel(p)
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
