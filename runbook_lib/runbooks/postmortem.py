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
from ..secrets import refuses_secret_parameters
from ..analysis import impact as impact_mod, plots, timeline
from ..records import incident
from .._time import iso_z, parse
from ..records.incident_data import DURATION_BUCKETS, LATENCY, IncidentData, load
from .postmortem_doc import error_class, render_markdown
from .postmortem_doc import human as _human


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, source: str, min_error_ratio: float, min_errors: int, max_gap_steps: int, incident_id: str = "",
          postmortem_name: str = "postmortem.md",
          latency_threshold_s: float = impact_mod.LATENCY_THRESHOLD_S, apply_changes: bool = False) -> PostmortemRun:
    """Validate the parameters (the first bad one names itself) and load the incident.

    `apply_changes` approves sending the RESOLVED update to the configured services (PagerDuty
    resolve, the Slack thread, the status page): the postmortem changes nothing else.
    """
    if postmortem_name != Path(str(postmortem_name)).name or not str(postmortem_name).endswith(".md"):
        raise params.ParameterError("postmortem_name", postmortem_name, "a file name ending in .md (no folders)")
    cfg = {"source": params.text("source", source, maximum=4096),
           "min_error_ratio": params.fraction("min_error_ratio", min_error_ratio),
           "min_errors": params.positive_int("min_errors", min_errors, maximum=1_000_000),
           "max_gap_steps": _non_negative_int("max_gap_steps", max_gap_steps),
           "incident_id": params.incident_id("incident_id", incident_id) if incident_id else "",
           "postmortem_name": postmortem_name,
           "latency_threshold_s": params.timeout("latency_threshold_s", latency_threshold_s, maximum=600),
           **params.shared(apply_changes=apply_changes)}
    return PostmortemRun(cfg, load(cfg["source"], extract_to=Path.cwd() / ".bundle"))


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise params.ParameterError(name, value, "a whole number from 0 to 100")
    return value


class PostmortemRun:
    def __init__(self, cfg: dict[str, Any], data: IncidentData) -> None:
        self.cfg, self.data = cfg, data
        self.out_dir = data.folder or Path.cwd()
        self.requests = self.errors = self.steps = self.slow = None
        self.latency_bound_s: float | None = None
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
            self.slow, self.latency_bound_s = impact_mod.slow_increments(
                d.frames.get(DURATION_BUCKETS), self.cfg["latency_threshold_s"], origin=origin)
            self.source = "metrics"
            how = (f"from Prometheus counter exports: increments between samples {self.step_s:g} s apart "
                   "(counter resets handled)" + (f"; calls slower than {self.latency_bound_s:g} s from the duration "
                                                 "histogram" if self.latency_bound_s else
                                                 "; no duration histogram exported, so slow calls are not counted"))
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
        self.steps = impact_mod.per_step(self.requests, self.errors, self.slow)
        totals = {"requests": int(self.steps["requests"].sum()), "failed": int(self.steps["errors"].sum()),
                  "slow": int(self.steps["slow"].sum())}
        value = {"source": self.source, "step_s": self.step_s, **totals}
        record.record("traffic", value, markdown=f"Traffic {how}: {totals['requests']:,} calls, "
                      f"{totals['failed']:,} failed, {totals['slow']:,} slow over the window.")
        return value

    # -- 2. the incident window ---------------------------------------------------------------
    def detect(self) -> dict[str, Any]:
        c = self.cfg
        if self.steps is None:
            self.impact = {"found": False, "method": "no traffic data"}
        else:
            found = impact_mod.detect(self.steps, self.errors, step_s=self.step_s or 60, min_ratio=c["min_error_ratio"],
                                      min_errors=c["min_errors"], max_gap=c["max_gap_steps"], source=self.source,
                                      detected_at=response_start(self.data), latency_bound_s=self.latency_bound_s)
            self.impact = found.to_dict()
        i = self.impact
        md = (f"**Method**: {i['method']}.\n\n" + (display.kv_table([
            ("episode", i["selected_by"]),
            ("start", i["start"]), ("peak", f"{i['peak']} ({i['peak_error_ratio']:.0%} of calls bad)"),
            ("end", i["end"]), ("duration", _human(i["duration_s"])),
            ("bad calls in the incident (failed, timed out or slow)", f"{i['bad_requests']:,}"),
            ("failed calls in the incident", f"{i['failed_requests']:,} of {i['requests']:,} completed"),
            ("slow calls in the incident", f"{i['slow_requests']:,}" + (f" (over {i['latency_bound_s']:g} s)"
                                                                        if i.get("latency_bound_s") else "")),
            ("steps with no call completing", i["stalled_steps"]),
            ("longest stretch with no call answered in time", _human(i.get("unanswered_s") or 0)),
            ("failed calls in the whole window", f"{i['failed_in_window']:,}"),
            ("source", i["source"])], ("", "")) if i.get("found") else
            "**No incident window found** in the data: " + (i.get("selected_by") or "no step reached the thresholds")
            + "."))
        record.record("impact_window", self.impact, markdown=md)
        if self.requests is not None and self._can_draw("traffic"):
            fig = plots.traffic(self.requests, self.errors, step_s=self.step_s or 60, impact=self.impact,
                                changes=self.data.changes(), source=self.source)
            self.figures.append(str(plots.save_and_show(fig, self.out_dir / "postmortem-traffic.png")))
        return self.impact

    def _can_draw(self, figure: str) -> bool:
        """False (and the record says why) when figures cannot be drawn here (no matplotlib)."""
        why = plots.missing()
        if why:
            record.record(f"figure_{figure}", {"drawn": False, "reason": why}, markdown=f"_Figure not drawn: {why}._")
        return why is None

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
        if not self._can_draw("latency"):
            return value
        fig = plots.latency(have, impact=self.impact, changes=self.data.changes(),
                            threshold_s=self.latency_bound_s or self.cfg["latency_threshold_s"])
        self.figures.append(str(plots.save_and_show(fig, self.out_dir / "postmortem-latency.png")))
        return value

    # -- 4. time to detect / mitigate / resolve --------------------------------------------------
    def timings(self) -> dict[str, Any]:
        self.times = compute_timings(self.data, self.impact, self.step_s or 60)
        t = self.times
        rows = [(k.replace("_", " ").removesuffix(" s"), _human(t[k]) if t[k] is not None else "n/a", t[f"{k}_how"])
                for k in ("time_to_detect_s", "time_to_first_action_s", "time_to_mitigate_s", "time_to_resolve_s")]
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
                  timeline.from_alerts(d.frames.get("alerts_firing"), self.step_s or 60, within=self._span()),
                  timeline.from_changes(d.changes()),
                  timeline.from_events(d.events, since=((d.manifest or {}).get("window") or {}).get("start"))]
        groups += [timeline.from_records(nb, rs) for nb, rs in d.records.items()]
        self.timeline = timeline.merge(*groups)
        rows = [(t.strftime("%Y-%m-%d %H:%M:%S"), s, e) for t, s, e in
                zip(self.timeline["time"], self.timeline["source"], self.timeline["event"], strict=True)]
        value = [{"time": r[0] + "Z", "source": r[1], "event": r[2]} for r in rows]
        record.record("timeline", value, markdown=display.table(("time (UTC)", "source", "event"), rows))
        return self.timeline

    def _span(self) -> tuple[Any, Any]:
        """This incident's span for filtering the window's alerts: impact start (or detection) to its end."""
        import pandas as pd

        i, t = self.impact, self.times
        start = i.get("start") or t.get("detected_at")
        end = max([x for x in (i.get("end"), self.data.index.get("finished_at")) if x], default=None)
        step = pd.Timedelta(seconds=self.step_s or 60)
        return (pd.Timestamp(start) - step if start else None, pd.Timestamp(end) + step if end else None)

    # -- 7. the postmortem document ------------------------------------------------------------------
    def lifecycle(self) -> dict[str, Any]:
        """The incident's severity from the whole measured impact, and its status once the impact ended.

        Severity follows the whole measured impact as `severity.reassess` rules (raised to it; lowered
        only when no call failed); a change is an event in the history, by "postmortem". The status
        becomes `resolved` (with `resolved_at` = the impact end, and `mitigated_at` when a change
        preceded it) only when the data runs past the end, so an ongoing incident is never closed.
        """
        folder = self.data.folder
        out: dict[str, Any] = {"severity": self.data.index.get("severity"), "status": self.data.index.get("status")}
        if folder is None or not self.impact.get("found"):
            return out
        from ..analysis.severity import reassess
        from ..records.incident import edit_index, set_severity

        change = reassess(out["severity"], self.impact)
        if change:
            out["severity"] = set_severity(folder, change[0], by="postmortem", why=change[1])["severity"]
        last_sample = self.steps.index.max() if self.steps is not None and not self.steps.empty else None
        import pandas as pd

        if last_sample is not None and last_sample >= pd.Timestamp(self.impact["end"]) + pd.Timedelta(
                seconds=2 * (self.step_s or 60)):
            with edit_index(folder) as index:
                index["status"] = "resolved"
                index["resolved_at"] = self.impact["end"]
                index["mitigated_at"] = self.times.get("mitigated_at")
                index["impact_duration_s"] = self.impact.get("duration_s")
            out["status"] = "resolved"
        self.data.index.update(severity=out["severity"], status=out["status"])
        from ..records.incident import read_index

        self.data.index = read_index(folder) or self.data.index
        return out

    def write_postmortem(self) -> Path:
        self.lifecycle()
        text = render_markdown(self.data, self.impact, self.times, self.timeline, self.figures)
        path = self.out_dir / self.cfg["postmortem_name"]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
        section = {"markdown": path.name, "impact_start": self.impact.get("start"),
                   "impact_end": self.impact.get("end"), "peak": self.impact.get("peak"),
                   "duration_s": self.impact.get("duration_s"),
                   **{k: self.times.get(k) for k in ("time_to_detect_s", "time_to_first_action_s", "time_to_mitigate_s",
                                                     "time_to_resolve_s", "detected_at", "first_action_at",
                                                     "mitigated_at")},
                   "bad_requests": self.impact.get("bad_requests") if self.impact.get("found") else None,
                   "slow_requests": self.impact.get("slow_requests") if self.impact.get("found") else None,
                   "failed_requests": self.impact.get("failed_requests") if self.impact.get("found") else None,
                   "failed_requests_source": self.source if self.steps is not None else None,
                   "affected_models": self.impact.get("affected_models", [])}
        if self.data.folder is not None:
            incident.update_index(self.data.folder, postmortem=section)
        record.record("postmortem", section, markdown=f"Saved `{path}`; the prefilled document follows.\n\n---\n\n"
                      + text)
        return path

    def communicate_resolved(self) -> list[dict[str, Any]]:
        """The RESOLVED messages, once the data shows the impact ended (drafts, logged in the incident)."""
        from . import comms
        from ..records.incident import read_index

        folder = self.data.folder
        index = read_index(folder) if folder is not None else None
        if not index or index.get("status") != "resolved":
            why = ("no incident folder" if folder is None else
                   "the impact has not been seen to end in the data: no RESOLVED message yet")
            record.record("communications", {"status": None, "reason": why}, markdown=f"Not drafted: {why}.")
            return []
        return comms.resolved_messages(index, folder=folder, by="postmortem",
                                       approved=bool(self.cfg.get("apply_changes")))

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


def _ts(value: Any) -> Any:
    import pandas as pd

    t = parse(value) if isinstance(value, str) else value
    return None if t is None else pd.Timestamp(t)


def response_start(data: IncidentData) -> Any:
    """When this incident's response began (its triage, else the index's start): the anchor that
    picks this incident's episode out of a window that may hold others."""
    started = _ts(data.index.get("started_at"))
    triage = [_ts(rs[0]["recorded_at"]) for nb, rs in data.records.items() if nb == "triage" and rs]
    return min([t for t in [started, *triage] if t is not None], default=None)


def detection(data: IncidentData, step_s: float, impact_start: Any = None) -> tuple[Any, str]:
    """When *this* incident was detected: its first alert, else its triage starting.

    Alerts count when they began firing inside this incident (from its impact start, less the
    sampling lag, up to its response): a `rate()` alert of an earlier fault that is still firing
    began before this impact and is not this incident's detection. Alertmanager notifications kept
    by `runbook serve` in this incident's index are its own and count within the same bounds.
    """
    import pandas as pd

    begun = response_start(data)
    if begun is None:
        return None, "nothing recorded"
    lower = None if impact_start is None else \
        pd.Timestamp(impact_start) - pd.Timedelta(seconds=impact_mod.DETECTION_LAG_STEPS * step_s)
    notified = [_ts(e["time"]) for e in timeline.from_notifications(data.index.get("alerts")) if e.get("kind") == "start"]
    firing = [sp["start"] for sp in timeline.alert_spans(data.frames.get("alerts_firing"), step_s)]
    alerts = [t for t in [*notified, *firing] if t is not None and t <= begun and (lower is None or t >= lower)]
    if alerts and min(alerts) <= begun:
        return min(alerts), "the first alert of this incident firing"
    return begun, "triage starting (no alert of this incident fired before it)"


def compute_timings(data: IncidentData, impact: dict[str, Any], step_s: float) -> dict[str, Any]:
    """Time to detect, to the first mitigation action, to mitigate (impact ended after a change) and to resolve.

    Never negative: detection seen before the first bad sample (counters are sampled every step) is
    reported as 0 s with the reason, so `runbook report` never averages impossible values.
    """
    import pandas as pd

    start = pd.Timestamp(impact["start"]) if impact.get("found") else None
    end = pd.Timestamp(impact["end"]) if impact.get("found") else None
    detected, detected_how = detection(data, step_s, impact.get("start") if impact.get("found") else None)
    changes = sorted(pd.Timestamp(c["at"]) for c in data.changes() if c.get("at"))
    first_action = changes[0] if changes else None
    # Mitigated: the impact ended after a change was applied (the change may have ended it; the
    # postmortem asks what did). A change after the impact ended did not mitigate this incident.
    mitigated = end if first_action is not None and end is not None and first_action <= end else None

    def since(t: Any) -> float | None:
        return None if t is None or start is None else round((t - start).total_seconds(), 1)

    ttd = since(detected)
    ttd_how = f"{detected_how} minus the impact start"
    if ttd is not None and ttd < 0:
        ttd_how = (f"{detected_how} came {-ttd:g} s before the first bad sample (counters are sampled every "
                   f"{step_s:g} s): reported as 0")
        ttd = 0.0
    out = {"impact_start": impact.get("start"), "detected_at": _iso(detected),
           "detected_by": "alert" if detected_how.startswith("the first alert") else
                          "triage" if detected is not None else None,
           "first_action_at": _iso(first_action), "mitigated_at": _iso(mitigated),
           "resolved_at": impact.get("end"),
           "time_to_detect_s": ttd, "time_to_detect_s_how": ttd_how,
           "time_to_first_action_s": since(first_action),
           "time_to_first_action_s_how": ("the first applied change minus the impact start" if changes else
                                          "no change was applied"),
           "time_to_mitigate_s": since(mitigated),
           "time_to_mitigate_s_how": ("the impact end minus its start: the impact ended after the first change "
                                      f"({_iso(first_action)})" if mitigated is not None else
                                      "no change was applied" if not changes else
                                      "not mitigated by a change: the impact had ended before any change"
                                      if end is not None and first_action > end else "no impact window measured"),
           "time_to_resolve_s": impact.get("duration_s") if impact.get("found") else None,
           "time_to_resolve_s_how": "the impact end minus its start (from the data)"}
    if start is None:
        for key in ("time_to_detect_s_how", "time_to_first_action_s_how", "time_to_mitigate_s_how"):
            out[key] = "no impact window measured"
    return out


def _iso(ts: Any) -> str | None:
    return None if ts is None else iso_z(ts)
