"""One UTC timeline of an incident, merged from what each source recorded.

Sources: the impact detected in the metrics, Prometheus alerts (when each started and stopped
firing), the runbooks' recorded results (probes, verdicts, messages sent, state after), the changes
applied (who, what, undo), and Kubernetes events. Each entry says where it came from, so a reviewer
can tell a measurement from a decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._time import iso_z
from ..record import VERDICT, is_change

# record name -> how a runbook's result reads on the timeline (None: not a timeline event)
_RECORD_EVENTS = {
    "mistral_api": lambda nb, v: "{}: Mistral API probed: {}".format(
        nb, ", ".join(f"{n} {k}" for k, n in (v.get("counts") or {}).items()) or "no answer"),
    "service_health": lambda nb, v: (f"{nb}: our service health: {v.get('status')}" if v.get("status") else None),
    "severity": lambda nb, v: f"{nb}: severity {v.get('level')}: {v.get('reason') or v.get('why') or 'see record'}"
                              + (f" (incident already {v['previous']})" if v.get("previous") and
                                 v.get("previous") == v.get("level") and v.get("proposed") != v.get("level") else ""),
    VERDICT: lambda nb, v: f"{nb}: verdict: {v.get('line')}" if v.get("line") else None,
    "communications": lambda nb, v: f"{nb}: {v.get('level', '')} {v.get('status', '')} message drafted; Slack: "
                                    f"{(v.get('slack') or {}).get('reason', 'n/a')}",
    "state_after": lambda nb, v: (f"{nb}: state after: Mistral API {v.get('api_verdict')}, our service "
                                  f"{v.get('service_status') or 'n/a'}"),
    "recovery_monitor": lambda nb, v: f"{nb}: recovery monitor: {'RECOVERED' if v.get('recovered') else 'not recovered'}",
}


def entry(time: str | None, source: str, event: str, **extra: Any) -> dict[str, Any]:
    return {"time": time, "source": source, "event": event, **extra}


def from_impact(impact: dict[str, Any]) -> list[dict[str, Any]]:
    if not impact.get("found"):
        return []
    src = f"{impact.get('source', 'metrics')} (detected)"
    bad = impact.get("bad_requests", impact["failed_requests"])
    return [entry(impact["start"], src, "Impact started: bad calls (failed, timed out or slow) crossed the threshold"),
            entry(impact["peak"], src, f"Peak: {impact['peak_error_ratio']:.0%} of calls bad"),
            entry(impact["end"], src, f"Impact ended: {bad} bad calls ({impact['failed_requests']} failed) in "
                                      f"{impact['duration_s']:.0f} s")]


def alert_spans(alerts: Any, step_s: float) -> list[dict[str, Any]]:
    """Each alert's firing spans from an `ALERTS{alertstate="firing"}` range export: name, severity, start, end.

    `end` is when it stopped firing (last sample + one step), None when still firing at the export's end.
    """
    import pandas as pd

    if alerts is None or alerts.empty or "alertname" not in alerts:
        return []
    out = []
    frame = alerts.assign(time=pd.to_datetime(alerts["time"], utc=True)).sort_values("time")
    for name, g in frame.groupby("alertname"):
        times = list(g["time"].drop_duplicates())
        spans = [[times[0], times[0]]]
        for t in times[1:]:
            if (t - spans[-1][1]).total_seconds() <= 2 * step_s + 1e-6:
                spans[-1][1] = t
            else:
                spans.append([t, t])
        severity = str(g["severity"].iloc[0]) if "severity" in g else ""
        for first, last in spans:
            end = last + pd.Timedelta(seconds=step_s) if last < frame["time"].max() else None
            out.append({"name": str(name), "severity": severity, "start": first, "end": end})
    return out


def overlaps(span: dict[str, Any], start: Any, end: Any) -> bool:
    """Whether an alert span overlaps [start, end] (None: open on that side)."""
    return (end is None or span["start"] <= end) and (start is None or span["end"] is None or span["end"] >= start)


def from_alerts(alerts: Any, step_s: float, within: tuple[Any, Any] | None = None) -> list[dict[str, Any]]:
    """Alert firing spans as timeline entries; `within` keeps only spans overlapping that (start, end)."""
    out = []
    for span in alert_spans(alerts, step_s):
        if within is not None and not overlaps(span, *within):
            continue
        sev = span["severity"]
        out.append(entry(iso_z(span["start"]), "alert", f"Alert {span['name']} firing" + (f" ({sev})" if sev else ""),
                         kind="start"))
        if span["end"] is not None:
            out.append(entry(iso_z(span["end"]), "alert", f"Alert {span['name']} stopped firing", kind="stop"))
    return out


def from_notifications(alerts: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Alertmanager notifications `runbook serve` kept in `incident.json`: when each alert fired and ended.

    Repeats of the same firing (Alertmanager re-sends every repeat_interval) give one entry.
    """
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for a in alerts or []:
        status, name = a.get("status"), a.get("name", "alert")
        when = a.get("starts_at") if status == "firing" else a.get("ends_at") or a.get("received_at")
        key = (str(name), str(status), str(when))
        if not when or str(when).startswith("0001-") or key in seen:
            continue
        seen.add(key)
        verb = "firing" if status == "firing" else "resolved"
        out.append(entry(_norm(when), "alertmanager", f"Alert {name} {verb} (notified {a.get('received_at', '?')})",
                         kind="start" if status == "firing" else "stop"))
    return out


def from_records(notebook: str, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A runbook's recorded results ({name, recorded_at, value}) as timeline entries."""
    out: list[dict[str, Any]] = []
    records = list(records)
    if records:
        out.append(entry(_norm(records[0].get("recorded_at")), notebook, f"{notebook} runbook started"))
    for r in records:
        name, value = r.get("name", ""), r.get("value")
        if not isinstance(value, dict):
            continue
        if is_change(name) and value.get("applied"):
            continue  # from_changes has them, with who and undo
        render = _RECORD_EVENTS.get(name)
        text = render(notebook, value) if render else None
        if text:
            out.append(entry(_norm(r.get("recorded_at")), notebook, text))
    return out


def from_changes(changes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Applied changes: what, on what, by whom, and how to undo them."""
    return [entry(_norm(c.get("at")), "change", f"CHANGE by {c.get('who') or '?'}: {c.get('action')} on "
                                                f"{c.get('target')}" + ("" if c.get("verified") else " (NOT verified)"),
                  kubectl=c.get("kubectl", ""), undo=c.get("undo", ""))
            for c in changes if c.get("at")]


def from_events(events: Iterable[dict[str, Any]], *, since: str | None = None, limit: int = 50
                ) -> list[dict[str, Any]]:
    """Kubernetes events (as `kube.events` returns them) from `since` on.

    Warnings are kept one by one; Normal events of the same reason in the same second (a rollout's
    pod churn) become one entry, and only the last `limit` of those are kept.
    """
    events = [e for e in events if e.get("last_seen") and (since is None or _norm(e["last_seen"]) >= since)]
    out = [entry(_norm(e["last_seen"]), "k8s event", f"{e.get('type')} {e.get('reason')} {e.get('object')}: "
                                                     f"{e.get('message')}" + (f" (x{e['count']})" if
                                                                             (e.get("count") or 1) > 1 else ""))
           for e in events if e.get("type") != "Normal"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        if e.get("type") == "Normal":
            groups.setdefault((_norm(e["last_seen"]) or "", str(e.get("reason"))), []).append(e)
    normal = []
    for (when, reason), es in groups.items():
        if len(es) == 1:
            text = f"Normal {reason} {es[0].get('object')}: {es[0].get('message')}"
        else:
            objects = sorted({str(e.get("object")) for e in es})
            text = f"Normal {reason} x{len(es)}: " + ", ".join(objects[:4]) + (" ..." if len(objects) > 4 else "")
        normal.append(entry(when, "k8s event", text))
    return out + sorted(normal, key=lambda e: e["time"])[-limit:]


def merge(*groups: Iterable[dict[str, Any]]) -> Any:
    """All entries, oldest first, as a DataFrame (time as UTC timestamps; entries without a time dropped)."""
    import pandas as pd

    rows = [e for g in groups for e in g if e.get("time")]
    frame = pd.DataFrame(rows, columns=["time", "source", "event", "kubectl", "undo"])
    if frame.empty:
        return frame
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame.sort_values("time", kind="stable", ignore_index=True).fillna("")


def _norm(value: Any) -> str | None:
    """Record times come as `...+00:00`, change times as `...Z`: one form."""
    return str(value).replace("+00:00", "Z") if value else None

