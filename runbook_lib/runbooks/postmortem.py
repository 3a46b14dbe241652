"""The postmortem runbook's steps (notebooks/postmortem.ipynb), one public method per cell.

From an incident folder or evidence bundle: traffic and error timelines with the incident window
and changes marked, the incident's start/peak/end detected from the counters (`impact`), time to
detect / mitigate / resolve from the recorded results, the impact, one merged UTC timeline, and the
seed's postmortem template prefilled as `postmortem.md` in the incident folder. What people must
judge (users affected, lessons learned) is left for them, marked as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import display, params, record
from ..analysis import impact as impact_mod, plots, timeline
from ..records import incident
from .._time import iso_z
from ..records.incident_data import LATENCY, IncidentData, load

CLASS_TITLES = {"auth": "Authentication failure (401)", "rate_limit": "Rate limited (429)",
                "provider_error": "Mistral service error (5xx)", "network": "Network / timeout",
                "service": "Our service", "resolved": "No errors at triage"}

# Seeded action items per error class: (priority, action). People confirm, assign and date them.
ACTIONS = {
    "auth": [("P1", "Confirm the key in the Secret is the working one (fingerprints match) and revoke the old key"),
             ("P2", "Alert on 401 from the Mistral API separately from other errors"),
             ("P3", "Automate key rotation with an overlap period and a test of the new key before the switch")],
    "rate_limit": [("P1", "Review workspace limits at https://admin.mistral.ai/plateforme/limits; request an "
                          "increase if the traffic is legitimate"),
                   ("P2", "Client-side concurrency limit / queue sized from the limit (MAX_CONCURRENT_REQUESTS)"),
                   ("P3", "Alert when x-ratelimit-remaining falls below 20% of the limit")],
    "provider_error": [("P1", "Keep the fallback (MISTRAL_FALLBACK) tested, so switching is routine"),
                       ("P2", "Retries with exponential backoff and jitter for 5xx, bounded by a budget"),
                       ("P3", "Subscribe the on-call channel to https://status.mistral.ai")],
    "network": [("P1", "Review egress NetworkPolicies, DNS and proxy settings for api.mistral.ai"),
                ("P2", "Set client timeouts from the measured time to first byte, not a guess"),
                ("P3", "A synthetic probe from inside the cluster, alerting on DNS/TCP/TLS failures")],
}
GENERIC_ACTIONS = [("P2", "Add a runbook step or alert for what this incident showed")]


def start(*, source: str, min_error_ratio: float, min_errors: int, max_gap_steps: int, incident_id: str = "",
          postmortem_name: str = "postmortem.md") -> PostmortemRun:
    """Validate the parameters (the first bad one names itself) and load the incident."""
    if postmortem_name != Path(str(postmortem_name)).name or not str(postmortem_name).endswith(".md"):
        raise params.ParameterError("postmortem_name", postmortem_name, "a file name ending in .md (no folders)")
    cfg = {"source": params.text("source", source, maximum=4096),
           "min_error_ratio": params.fraction("min_error_ratio", min_error_ratio),
           "min_errors": params.positive_int("min_errors", min_errors, maximum=1_000_000),
           "max_gap_steps": _non_negative_int("max_gap_steps", max_gap_steps),
           "incident_id": params.incident_id("incident_id", incident_id) if incident_id else "",
           "postmortem_name": postmortem_name}
    return PostmortemRun(cfg, load(cfg["source"], extract_to=Path.cwd() / ".bundle"))


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise params.ParameterError(name, value, "a whole number from 0 to 100")
    return value


class PostmortemRun:
    def __init__(self, cfg: dict[str, Any], data: IncidentData) -> None:
        self.cfg, self.data = cfg, data
        self.out_dir = data.folder or Path.cwd()
        self.requests = self.errors = self.steps = None
        self.step_s: float | None = None
        self.source = "metrics"
        self.impact: dict[str, Any] = {"found": False}
        self.times: dict[str, Any] = {}
        self.timeline = None
        self.figures: list[str] = []
        d = data
        rows = [("source", d.source), ("incident folder", d.folder or "none (bundle only)"),
                ("evidence bundle", d.bundle or "none"),
                ("bundle seal", "n/a" if d.bundle is None else "intact" if not d.seal_problems else
                 "**BROKEN**: " + "; ".join(d.seal_problems)),
                ("runbooks recorded", ", ".join(d.records) or "none"),
                ("metrics exports", ", ".join(d.frames) or "none"), ("Kubernetes events", len(d.events)),
                ("pod logs", d.logs or "none")]
        record.record("sources", {"source": d.source, "folder": str(d.folder or ""), "bundle": str(d.bundle or ""),
                                  "seal_problems": d.seal_problems, "runbooks": list(d.records),
                                  "metrics": list(d.frames), "missing": d.missing, "parameters": cfg},
                      markdown=display.kv_table(rows, ("input", "found")) + (
                          "\n\n**Not available** (the analysis says where it falls back):\n\n"
                          + "\n".join(f"- {m}" for m in d.missing) if d.missing else ""))

    # -- 1. traffic --------------------------------------------------------------------------
    def traffic(self) -> dict[str, Any]:
        """Per-step requests and errors per model and code: counters when exported, else the pod logs."""
        d = self.data
        req, err = d.frames.get("requests_total_by_model_code"), d.frames.get("errors_total_by_model_code")
        self.step_s = d.step_s()
        if req is not None and not req.empty and self.step_s:
            import pandas as pd

            origin = pd.to_datetime(req["time"], utc=True).min()  # when Prometheus' data begins
            self.requests = impact_mod.increments(req, origin=origin)
            self.errors = impact_mod.increments(err, origin=origin)
            self.source = "metrics"
            how = (f"from Prometheus counter exports: increments between samples {self.step_s:g} s apart "
                   "(counter resets handled)")
        elif d.logs is not None:
            self.requests, self.errors, self.step_s = _from_logs(d.logs)
            self.source = "pod logs (ESTIMATE)"
            how = ("**from the pod logs, an ESTIMATE**: metrics were not exported, so each request log line is "
                   f"counted in {self.step_s:g} s buckets; log lines can be sampled, dropped or cut by `--tail`")
        else:
            value = {"source": None, "reason": "neither metrics nor logs in the evidence"}
            record.record("traffic", value, markdown="**No traffic data**: neither metrics nor pod logs were "
                          "collected, so the incident window cannot be measured. Timings below use the records only.")
            return value
        self.steps = impact_mod.per_step(self.requests, self.errors)
        totals = {"requests": int(self.steps["requests"].sum()), "failed": int(self.steps["errors"].sum())}
        value = {"source": self.source, "step_s": self.step_s, **totals}
        record.record("traffic", value, markdown=f"Traffic {how}: {totals['requests']:,} calls, "
                      f"{totals['failed']:,} failed over the window.")
        return value

    # -- 2. the incident window ---------------------------------------------------------------
    def detect(self) -> dict[str, Any]:
        c = self.cfg
        if self.steps is None:
            self.impact = {"found": False, "method": "no traffic data"}
        else:
            found = impact_mod.detect(self.steps, self.errors, step_s=self.step_s or 60, min_ratio=c["min_error_ratio"],
                                      min_errors=c["min_errors"], max_gap=c["max_gap_steps"], source=self.source)
            self.impact = found.to_dict()
        i = self.impact
        md = (f"**Method**: {i['method']}.\n\n" + (display.kv_table([
            ("start", i["start"]), ("peak", f"{i['peak']} ({i['peak_error_ratio']:.0%} of calls failing)"),
            ("end", i["end"]), ("duration", _human(i["duration_s"])),
            ("failed calls in the incident", f"{i['failed_requests']:,} of {i['requests']:,}"),
            ("failed calls in the whole window", f"{i['failed_in_window']:,}"),
            ("source", i["source"])], ("", "")) if i.get("found") else
            "**No incident window found** in the data: no step reached the thresholds."))
        record.record("impact_window", self.impact, markdown=md)
        if self.requests is not None:
            fig = plots.traffic(self.requests, self.errors, step_s=self.step_s or 60, impact=self.impact,
                                changes=self.data.changes(), source=self.source)
            self.figures.append(str(plots.save_and_show(fig, self.out_dir / "postmortem-traffic.png")))
        return self.impact

    # -- 3. latency ----------------------------------------------------------------------------
    def latency(self) -> dict[str, Any]:
        frames = {k: self.data.frames.get(v) for k, v in LATENCY.items()}
        have = {k: f for k, f in frames.items() if f is not None and not f.empty}
        if not have:
            value = {"available": False}
            record.record("latency", value, markdown="Latency percentiles: not available (no metrics exports).")
            return value
        value = {"available": True, **{f"{k}_max_s": round(float(f["value"].astype(float).max()), 3)
                                       for k, f in have.items()}}
        record.record("latency", value, markdown="Latency percentiles over the window (from the duration "
                      "histogram). Highest: " + ", ".join(f"{k} {value[f'{k}_max_s']} s" for k in have) + ".")
        fig = plots.latency(have, impact=self.impact, changes=self.data.changes())
        self.figures.append(str(plots.save_and_show(fig, self.out_dir / "postmortem-latency.png")))
        return value

    # -- 4. time to detect / mitigate / resolve --------------------------------------------------
    def timings(self) -> dict[str, Any]:
        self.times = compute_timings(self.data, self.impact, self.step_s or 60)
        t = self.times
        rows = [(k.replace("_", " "), _human(t[k]) if t[k] is not None else "n/a", t[f"{k}_how"])
                for k in ("time_to_detect_s", "time_to_mitigate_s", "time_to_resolve_s")]
        record.record("timings", t, markdown=display.table(("measure", "value", "how"), rows))
        return t

    # -- 5. impact -------------------------------------------------------------------------------
    def impact_summary(self) -> dict[str, Any]:
        i = self.impact
        value = {"failed_requests": i.get("failed_requests") if i.get("found") else None,
                 "failed_requests_source": self.source if self.steps is not None else None,
                 "duration_s": i.get("duration_s"), "affected_models": i.get("affected_models", []),
                 "by_code": i.get("by_code", {}), "by_model": i.get("by_model", {})}
        md = (display.kv_table([
            ("failed calls", f"{value['failed_requests']:,}" if value["failed_requests"] is not None else "unknown"),
            ("counted from", value["failed_requests_source"] or "n/a"), ("duration", _human(value["duration_s"])),
            ("affected models", ", ".join(value["affected_models"]) or "n/a"),
            ("failed calls by code", ", ".join(f"{k}: {v:,}" for k, v in value["by_code"].items()) or "n/a"),
            ("users affected", "_not measured here: fill in from product analytics_")], ("", "")))
        record.record("impact", value, markdown=md)
        return value

    # -- 6. one timeline ---------------------------------------------------------------------------
    def merged_timeline(self) -> Any:
        d = self.data
        groups = [timeline.from_impact(self.impact), timeline.from_notifications(d.index.get("alerts")),
                  timeline.from_alerts(d.frames.get("alerts_firing"), self.step_s or 60),
                  timeline.from_changes(d.changes()),
                  timeline.from_events(d.events, since=((d.manifest or {}).get("window") or {}).get("start"))]
        groups += [timeline.from_records(nb, rs) for nb, rs in d.records.items()]
        self.timeline = timeline.merge(*groups)
        rows = [(t.strftime("%Y-%m-%d %H:%M:%S"), s, e) for t, s, e in
                zip(self.timeline["time"], self.timeline["source"], self.timeline["event"], strict=True)]
        value = [{"time": r[0] + "Z", "source": r[1], "event": r[2]} for r in rows]
        record.record("timeline", value, markdown=display.table(("time (UTC)", "source", "event"), rows))
        return self.timeline

    # -- 7. the postmortem document ------------------------------------------------------------------
    def write_postmortem(self) -> Path:
        text = render_markdown(self.data, self.impact, self.times, self.timeline, self.figures)
        path = self.out_dir / self.cfg["postmortem_name"]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
        section = {"markdown": str(path), "impact_start": self.impact.get("start"),
                   "impact_end": self.impact.get("end"), "peak": self.impact.get("peak"),
                   "duration_s": self.impact.get("duration_s"),
                   **{k: self.times.get(k) for k in ("time_to_detect_s", "time_to_mitigate_s", "time_to_resolve_s")},
                   "failed_requests": self.impact.get("failed_requests") if self.impact.get("found") else None,
                   "failed_requests_source": self.source if self.steps is not None else None,
                   "affected_models": self.impact.get("affected_models", [])}
        if self.data.folder is not None:
            incident.update_index(self.data.folder, postmortem=section)
        record.record("postmortem", section, markdown=f"Saved `{path}`; the prefilled document follows.\n\n---\n\n"
                      + text)
        return path

    def summary(self) -> dict[str, Any]:
        i, t = self.impact, self.times
        cls = error_class(self.data)
        line = (f"POSTMORTEM {cls}: " + (f"impact {i['start']} to {i['end']} ({_human(i['duration_s'])}), "
                                          f"{i['failed_requests']:,} failed calls" if i.get("found") else
                                          "no incident window found in the data")
                + f"; detect {_human(t.get('time_to_detect_s'))}, mitigate {_human(t.get('time_to_mitigate_s'))}")
        value = {"line": line, "error_class": cls, "impact": i, "timings": t,
                 "postmortem": str(self.out_dir / self.cfg["postmortem_name"])}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`")
        return value


def _from_logs(path: Path) -> tuple[Any, Any, float]:
    """Counter-like increment frames from the pod logs, bucketed (10 s for short windows, else 60 s)."""
    import pandas as pd

    from ..sources import logagg

    agg = logagg.aggregate(path, freq_s=10)
    frame = agg.frame
    span = (frame["bucket"].max() - frame["bucket"].min()).total_seconds() if not frame.empty else 0
    step = 10.0
    if span > 3600:
        agg, step = logagg.aggregate(path, freq_s=60), 60.0
        frame = agg.frame
    end = frame["bucket"] + pd.Timedelta(seconds=step)  # a bucket's counts are known at its end, like a sample
    req = pd.DataFrame({"time": end, "model": frame["model"], "code": frame["code"], "increase": frame["requests"]})
    err = pd.DataFrame({"time": end, "model": frame["model"], "code": frame["code"], "increase": frame["errors"]})
    return req, err[err["increase"] > 0].reset_index(drop=True), step


def error_class(data: IncidentData) -> str:
    """The class the triage decided (index, else the triage verdict record)."""
    cls = data.index.get("error_class")
    if not cls:
        verdicts = [v for nb, v in data.values(record.VERDICT) if nb == "triage"]
        cls = verdicts[-1].get("branch") if verdicts else None
    return str(cls or "unknown")


def compute_timings(data: IncidentData, impact: dict[str, Any], step_s: float) -> dict[str, Any]:
    """Time to detect (first alert or triage), to mitigate (first applied change), to resolve (impact end)."""
    import pandas as pd

    start = pd.Timestamp(impact["start"]) if impact.get("found") else None
    alerts = [pd.Timestamp(e["time"]) for e in [*timeline.from_alerts(data.frames.get("alerts_firing"), step_s),
                                                *timeline.from_notifications(data.index.get("alerts"))]
              if e.get("kind") == "start"]
    triage = [pd.Timestamp(rs[0]["recorded_at"]) for nb, rs in data.records.items() if nb == "triage" and rs]
    if not triage and data.index.get("started_at"):
        triage = [pd.Timestamp(data.index["started_at"])]
    detected = min([*alerts, *triage], default=None)
    detected_how = ("the first alert firing" if alerts and detected == min(alerts) else
                    "triage starting (no alert fired before it)" if triage else "nothing recorded")
    changes = sorted(pd.Timestamp(c["at"]) for c in data.changes() if c.get("at"))
    mitigated = changes[0] if changes else None

    def since(t: Any) -> float | None:
        return None if t is None or start is None else round((t - start).total_seconds(), 1)

    out = {"impact_start": impact.get("start"), "detected_at": _iso(detected), "mitigated_at": _iso(mitigated),
           "detected_by": "alert" if alerts and detected == min(alerts) else "triage" if triage else None,
           "resolved_at": impact.get("end"),
           "time_to_detect_s": since(detected),
           "time_to_detect_s_how": f"{detected_how} minus the impact start",
           "time_to_mitigate_s": since(mitigated),
           "time_to_mitigate_s_how": ("the first applied change minus the impact start" if changes else
                                      "no change was applied"),
           "time_to_resolve_s": impact.get("duration_s") if impact.get("found") else None,
           "time_to_resolve_s_how": "the impact end minus its start (from the data)"}
    if start is None:
        out["time_to_detect_s_how"] = out["time_to_mitigate_s_how"] = "no impact window measured"
    return out


def render_markdown(data: IncidentData, impact: dict[str, Any], timings: dict[str, Any], merged: Any,
                    figures: list[str]) -> str:
    """The seed's postmortem template, prefilled; what only people know is marked `_(to fill)_`."""
    idx = data.index
    cls = error_class(data)
    title = CLASS_TITLES.get(cls, cls)
    found = impact.get("found")
    date = (impact.get("start") or idx.get("started_at") or "")[:10] or "_(to fill)_"
    severity = idx.get("severity") or next((v.get("severity") for nb, v in data.values(record.VERDICT) if nb == "triage"),
                                           None) or "_(to fill)_"
    diagnosis = idx.get("diagnosis") or next((v.get("line") for nb, v in data.values(record.VERDICT) if nb != "triage"),
                                             None)
    findings = _findings(data)
    changes = data.changes()
    lines = [f"## Incident: Mistral AI {title}",
             f"**Date:** {date}  ",
             f"**Duration:** {_human(impact.get('duration_s')) if found else '_(to fill)_'}  ",
             f"**Severity:** {severity}  ",
             "**Incident Commander:** _(to fill)_  ",
             f"**Incident:** {idx.get('id') or data.source}  ",
             "", "### Summary",
             (f"From {impact['start']} to {impact['end']} UTC, {impact['failed_requests']:,} of "
              f"{impact['requests']:,} calls to the Mistral API failed ({', '.join(f'{k}: {v:,}' for k, v in impact['by_code'].items())}), "
              f"peaking at {impact['peak_error_ratio']:.0%}. Triage classified it as **{title}**"
              if found else f"Triage classified it as **{title}**; no incident window was measured in the data")
             + (f"; the diagnosis found: {diagnosis}." if diagnosis else "."),
             "", "### Timeline (UTC)", "| Time | Event |", "|------|-------|"]
    if merged is not None and not merged.empty:
        lines += [f"| {t.strftime('%H:%M:%S')} | {display.cell(f'[{s}] {e}')} |"
                  for t, s, e in zip(merged["time"], merged["source"], merged["event"], strict=True)]
    lines += ["", "### Root Cause",
              (f"Diagnosis: {diagnosis}" if diagnosis else "_(to fill: no diagnosis runbook recorded a verdict)_")]
    lines += [f"- {f}" for f in findings]
    lines += ["", "_(to fill: why it happened, beyond what the runbooks measured)_",
              "", "### Impact",
              "- Users affected: _(to fill: from product analytics)_",
              f"- Duration of impact: {_human(impact.get('duration_s')) if found else 'unknown'}",
              f"- Requests failed: {impact['failed_requests']:,} (from {impact.get('source')})" if found else
              "- Requests failed: unknown (no metrics or logs)",
              f"- Affected models: {', '.join(impact.get('affected_models') or []) or 'n/a'}",
              "- Revenue impact: _(to fill, if applicable)_",
              "", "### Detection",
              "How was the incident detected?",
              f"- [{'x' if timings.get('detected_by') == 'alert' else ' '}] Automated alerting",
              "- [ ] Customer report", "- [ ] Internal testing",
              f"- Time to detect: {_human(timings.get('time_to_detect_s'))} ({timings.get('time_to_detect_s_how')})",
              "", "### Resolution"]
    if changes:
        lines += [f"- {c.get('at')}: {c.get('action')} on {c.get('target')} by {c.get('who')}"
                  f" ({'verified' if c.get('verified') else 'NOT verified'}); undo: `{c.get('undo')}`" for c in changes]
    else:
        lines.append("- No change was applied by the runbooks.")
    lines += [f"- Time to mitigate: {_human(timings.get('time_to_mitigate_s'))} "
              f"({timings.get('time_to_mitigate_s_how')})",
              f"- Time to resolve: {_human(timings.get('time_to_resolve_s'))} ({timings.get('time_to_resolve_s_how')})",
              "", "### Action Items",
              "| Priority | Action | Owner | Due Date | Status |", "|----------|--------|-------|----------|--------|"]
    lines += [f"| {p} | {display.cell(a)} | @owner | YYYY-MM-DD | [ ] |" for p, a in action_items(data, timings)]
    lines += ["", "### Lessons Learned", "- What went well: _(to fill)_", "- What could be improved: _(to fill)_",
              "- What we got lucky with: _(to fill)_", "", "### Evidence",
              f"- Bundle: `{data.bundle}`" + (" (seal intact)" if data.bundle and not data.seal_problems else
                                             f" (**seal broken**: {'; '.join(data.seal_problems)})"
                                             if data.seal_problems else ""),
              *[f"- Figure: `{Path(f).name}`" for f in figures],
              *[f"- Not available: {m}" for m in data.missing],
              f"- Impact detection: {impact.get('method', 'n/a')}", ""]
    return "\n".join(lines)


def _findings(data: IncidentData) -> list[str]:
    """The diagnosis' explanations, as they were recorded (explanation/advice/summary strings)."""
    out = []
    for nb, rs in data.records.items():
        if nb == "triage":
            continue
        for r in rs:
            v = r.get("value")
            if isinstance(v, dict):
                for key in ("explanation", "advice", "summary"):
                    if isinstance(v.get(key), str) and v[key]:
                        out.append(f"{nb} / {r['name']}: {v[key]}")
    return out[:6]


def action_items(data: IncidentData, timings: dict[str, Any]) -> list[tuple[str, str]]:
    """Seeded from the class, the changes left in place, the gaps in evidence, and slow detection."""
    items = list(ACTIONS.get(error_class(data), GENERIC_ACTIONS))
    for c in data.changes():
        items.append(("P2", f"Decide whether to keep or undo the mitigation '{c.get('action')}' on {c.get('target')} "
                            f"(undo: {c.get('undo')})"))
        if not c.get("verified"):
            items.append(("P1", f"Check the unverified change '{c.get('action')}' on {c.get('target')}"))
    for m in data.missing:
        items.append(("P3", f"Make this evidence source available next time: {m}"))
    ttd = timings.get("time_to_detect_s")
    if ttd is not None and ttd > 300:
        items.append(("P2", f"Detection took {_human(ttd)}: alert earlier (see deploy/prometheus/mistral-rules.yml)"))
    return items


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    sign, s = ("-" if s < 0 else ""), abs(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return sign + (f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s")


def _iso(ts: Any) -> str | None:
    return None if ts is None else iso_z(ts)
