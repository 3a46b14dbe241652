"""The 5xx runbook's steps (notebooks/diagnose_server_error.ipynb), one public method per cell.

Seed, 500/503 Service Error: 1 check Mistral's status; 2 enable graceful degradation
(`MISTRAL_FALLBACK=true`); 3 notify users; 4 monitor for recovery (`watch -n 30 curl ...`). Here
the error mix is measured now (a burst of probes) and over time (Prometheus, when reachable), the
provider's status page is read (unreadable means "unknown", never "all clear"), the fallback is a
dry run unless `apply_changes` is True, users are told before anything waits, and the recovery
watch runs last, bounded (`monitor_max_s`) and plotted.
"""

from __future__ import annotations

import time
from typing import Any

from .. import display, params, record
from ..sources import probes, statuspage
from . import steps
from .._async import run_sync
from ..secrets import SecretRef, refuses_secret_parameters

ERRORS_BY_CODE = "sum by (code) (rate(mistral_errors_total[1m]))"
HISTORY_S = 30 * 60
FALLBACK_ENV = {"MISTRAL_FALLBACK": "true"}


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, status_feed_url: str, monitor_interval_s: float, monitor_max_s: float, healthy_needed: int,
          probe_samples: int, **common: Any) -> ServerErrorRunbook:
    """Validate every parameter first; a wrong one names itself and what is accepted."""
    cfg = steps.common_parameters(**common)  # the parameters every diagnosis notebook shares
    feed = params.url("status_feed_url", status_feed_url, allow_empty=True)
    feed, why = (feed, "given (status_feed_url)") if feed else statuspage.feed_for(cfg["mistral_url"])
    cfg.update(status_feed_url=feed, status_feed_chosen=why,
               monitor_interval_s=params.timeout("monitor_interval_s", monitor_interval_s, maximum=600),
               monitor_max_s=params.timeout("monitor_max_s", monitor_max_s, maximum=3600),
               healthy_needed=params.positive_int("healthy_needed", healthy_needed, maximum=100),
               probe_samples=params.positive_int("probe_samples", probe_samples, maximum=30))
    cfg["monitor_bound_note"] = _fit_monitor_to_cell(cfg)
    return ServerErrorRunbook(cfg, steps.show_parameters(cfg))


def _fit_monitor_to_cell(cfg: dict[str, Any]) -> str:
    """Shorten the watch to end, with its verdict, inside the cell bound `runbook run`/`respond` set.

    An explicit `monitor_max_s` that cannot fit is refused before the kernel starts (naming it);
    what arrives too long here is the notebook's default, so it is shortened and the record says so.
    Returns the note ("" when nothing changed or no bound is known, as under raw papermill).
    """
    from .. import bounds

    cell, _deadline = bounds.from_kernel()
    if cell is None:
        return ""
    room = bounds.wait_room(cell, cfg["timeout_s"])
    if room < 1:
        raise params.ParameterError("monitor_max_s", cfg["monitor_max_s"], (
            f"a cell bound longer than {cell:g} s: the recovery watch, its last probe and its verdict cannot "
            "end inside it (raise --cell-timeout)"))
    if cfg["monitor_max_s"] <= room:
        return ""
    note = (f"monitor_max_s {cfg['monitor_max_s']:g} s shortened to {room:g} s so that the watch ends, with its "
            f"verdict, inside the {cell:g} s cell bound (--cell-timeout)")
    cfg["monitor_max_s"] = float(room)
    return note


class ServerErrorRunbook:
    def __init__(self, cfg: dict[str, Any], secret: SecretRef) -> None:
        self.cfg = cfg
        self.secret = secret
        self.api: probes.ApiSummary | None = None
        self.history: dict[str, Any] = {}
        self.provider: statuspage.ProviderStatus | None = None
        self.changes: list[dict[str, Any]] = []
        self.monitor: dict[str, Any] | None = None

    # 1. error mix ----------------------------------------------------------------------------
    def error_mix(self) -> dict[str, Any]:
        """A bounded burst of probes now, and the 5xx mix per code over the last 30 min if Prometheus answers."""
        cfg = self.cfg

        async def go() -> probes.ApiSummary:
            async with probes.client(cfg["timeout_s"], tls=cfg["mistral_url"].startswith("https:"),
                                     ca_bundle=cfg["ca_bundle"]) as c:
                return await probes.sample_mistral(c, cfg["mistral_url"], self.secret, cfg["timeout_s"],
                                                   cfg["probe_samples"], 2000.0)

        self.api = run_sync(go())
        rows = [(p["started_at"], p["status_code"] or "000", p["classification"], p["latency_ms"],
                 p["detail"] or "", p["correlation_id"]) for p in self.api.probes]
        md = (f"Probes now: **{self.api.verdict}** ({self.api.counts}, "
              f"{self.api.error_fraction:.0%} failed).\n\n"
              + display.table(("sent (UTC)", "HTTP", "class", "latency ms", "body", "correlation id"), rows))
        record.record("error_mix_now", {**self.api.to_dict(), "all_failed": self.api.all_failed}, markdown=md)
        self.history = self._history()
        return {"now": self.api.to_dict(), "history": self.history}

    def _history(self) -> dict[str, Any]:
        cfg = self.cfg
        if not cfg["prometheus_url"]:
            value = {"status": "skipped", "reason": "no prometheus_url", "query": ERRORS_BY_CODE, "last": {}}
            record.record("error_mix_history", value, markdown="Error mix over time: skipped (no `prometheus_url`).")
            return value
        from ..sources import metrics
        from ..errors import RunbookError, SourceUnavailable

        end = time.time()
        step_s = max(15.0, HISTORY_S / 120)  # about 120 points over the window, never finer than 15 s
        prom = metrics.Prometheus.from_config(cfg)
        query = prom.scoped(ERRORS_BY_CODE)  # `metrics_selector` scopes it to our service's series
        try:
            frame = metrics.range_query(prom, query, end - HISTORY_S, end, step_s, cfg["timeout_s"])
        except SourceUnavailable as exc:
            value = {"status": "unavailable", "reason": str(exc), "query": query, "last": {}}
            record.record("error_mix_history", value, markdown=(
                f"Error mix over time: **unavailable** ({exc}). The run goes on with the probes above."))
            return value
        except RunbookError as exc:
            value = {"status": "error", "reason": str(exc), "query": query, "last": {}}
            record.record("error_mix_history", value, markdown=f"Error mix over time: **error**: {exc}")
            return value
        if frame.empty:
            value = {"status": "empty", "reason": "no series (no error counted, or no data)", "query": query,
                     "last": {}}
            record.record("error_mix_history", value, markdown=(
                "Error mix over time: **no data** for the last 30 min (not the same as zero errors)."))
            return value
        if "code" not in frame.columns:
            frame["code"] = "all"
        frame["code"] = frame["code"].fillna("n/a").astype(str)
        last = {code: grp.sort_values("time")["value"].iloc[-1] for code, grp in frame.groupby("code")}
        value = {"status": "ok", "query": query, "step_s": step_s, "window_s": HISTORY_S,
                 "points": len(frame), "last": {k: (None if v != v else float(v)) for k, v in last.items()}}
        record.record("error_mix_history", value, markdown=(
            f"Error mix over the last 30 min (`{query}`, step {step_s:g} s), latest values:\n\n"
            + display.table(("code", "errors/s"), sorted(value["last"].items()))))
        _plot_error_mix(frame, end - HISTORY_S, end)
        return value

    # 2. provider status ------------------------------------------------------------------------
    def provider_status(self) -> dict[str, Any]:
        self.provider = statuspage.fetch(self.cfg["status_feed_url"], self.cfg["timeout_s"])
        value = self.provider.to_dict()
        value["state"] = ("unknown" if not self.provider.readable else
                          "incident" if self.provider.ongoing else "no_incident")
        if not self.provider.readable:
            md = (f"**Provider status UNKNOWN** ({self.provider.error}; feed `{self.provider.feed_url}`: "
                  f"{self.cfg['status_feed_chosen']}): this is not an all clear. Check https://status.mistral.ai "
                  "by hand.")
        else:
            rows = [(u.title, u.status, ", ".join(u.affected), u.published, u.link) for u in self.provider.ongoing]
            md = (f"**{self.provider.summary}** (feed `{self.provider.feed_url}`: {self.cfg['status_feed_chosen']})"
                  + ("\n\n" + display.table(("incident", "status", "affected", "updated", "link"), rows) if rows else
                     "\n\nThe 5xx are not (yet) acknowledged by Mistral: keep the probes' correlation ids for "
                     "support@mistral.ai."))
        record.record("provider_status", value, markdown=md)
        return value

    # 3. fallback -------------------------------------------------------------------------------
    def enable_fallback(self) -> dict[str, Any]:
        """The seed's `kubectl set env deployment/mistral-service MISTRAL_FALLBACK=true`, dry run unless approved."""
        from .. import kube
        from ..kube import write as remediate

        cfg = self.cfg
        with kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"]) as cluster:
            change = remediate.plan_env(cluster, cfg["namespace"], cfg["deployment"], dict(FALLBACK_ENV),
                                        cfg["container"], apply_changes=cfg["apply_changes"], operator=cfg["operator"],
                                        incident=cfg["incident_id"], timeout_s=cfg["timeout_s"])
        change.note = ((change.note + "\n\n") if change.note else "") + (
            "If the fallback itself does not work (seed: *Fallback not working*), return cached responses or "
            "an error page rather than letting requests hang.")
        value = steps.show_change("change_fallback_env", change)
        self.changes.append(value)
        return value

    # 4. communications (before the monitor: users are told first) ----------------------------
    def communicate(self) -> dict[str, Any]:
        from ..analysis.severity import classify

        applied = any(c["applied"] for c in self.changes)
        # The seed's table on this runbook's own probes (all fail: P1, >= 50%: P2, fewer: P3), not
        # "any 5xx is P2": a 25% flaky fault was raised from triage's P3 by that rule alone.
        own = classify(self.api.to_dict()) if self.api else None
        level = steps.incident_severity(self.cfg, own.level if own else "P2",
                                        own.reason if own else "the probes could not be sent again",
                                        by="diagnose_server_error")
        return steps.communicate(
            self.cfg, by="diagnose_server_error", level=level, status="MITIGATING" if applied else "INVESTIGATING",
            impact=("Users cannot use AI features (the AI provider returns server errors)" if level == "P1" else
                    "Degraded AI responses: some requests fail with provider server errors" if level == "P2" else
                    "Occasional errors: a few AI requests fail with provider server errors"),
            action=(("Fallback enabled (MISTRAL_FALLBACK=true)" if applied else
                     "Fallback prepared as a dry run")
                    + (f"; provider: {self.provider.summary}" if self.provider else "")
                    + f"; monitoring for recovery (up to {self.cfg['monitor_max_s']:g} s)"),
            workaround="Responses may come from the fallback (cached or simplified) while the provider recovers"
            if applied else "")

    # 5. state after ----------------------------------------------------------------------------
    def state_after(self) -> dict[str, Any]:
        return steps.state_after(self.cfg, self.secret)

    # 6. recovery monitor (last: the only long wait) ------------------------------------------
    def monitor_recovery(self) -> dict[str, Any]:
        """The seed's `watch -n 30 curl ...`, bounded: stops after N healthy probes in a row or at max duration."""
        from ..sources import monitor

        from .. import bounds

        cfg = self.cfg
        limit, notes = cfg["monitor_max_s"], [n for n in [cfg.get("monitor_bound_note")] if n]
        room = bounds.run_room(bounds.from_kernel()[1], cfg["timeout_s"])
        if room is not None and room < limit:  # the run's deadline comes first: end before it
            if room < 1:
                return self._not_monitored(room, notes + [
                    "the run's deadline (--run-timeout) leaves no time for a watch that ends with a verdict"])
            notes.append(f"watch shortened to {room:g} s to end, with its verdict, before the run's "
                         "deadline (--run-timeout)")
            limit = float(room)
        print(f"Watching {cfg['mistral_url']}/v1/models every {cfg['monitor_interval_s']:g} s for at most "
              f"{limit:g} s; recovered after {cfg['healthy_needed']} healthy probes in a row."
              + "".join(f" ({n})" for n in notes), flush=True)

        def progress(s: dict[str, Any]) -> None:
            print(f"  t+{s['t_s']:>6.2f}s  HTTP {s['status_code'] or '000'}  {s['classification']:<18} "
                  f"{s['latency_ms']:>8.1f} ms  healthy in a row: {s['consecutive_healthy']}", flush=True)

        result = monitor.monitor_recovery(cfg["mistral_url"], self.secret, interval_s=cfg["monitor_interval_s"],
                                          max_duration_s=limit, healthy_needed=cfg["healthy_needed"],
                                          timeout_s=cfg["timeout_s"], progress=progress, ca_bundle=cfg["ca_bundle"])
        recovered = result.stopped_because == monitor.RECOVERED
        watched = f"{round(result.duration_s) if result.duration_s >= 10 else round(result.duration_s, 1):g}"
        self.monitor = {**result.to_dict(), "recovered": recovered, "interval_s": cfg["monitor_interval_s"],
                        "max_duration_s": limit, "healthy_needed": cfg["healthy_needed"], "notes": notes,
                        "verdict": "recovered" if recovered else f"not recovered after {watched} s"}
        word = ("**RECOVERED**" if recovered else "**NOT recovered**")
        record.record("recovery_monitor", self.monitor, markdown=(
            f"{word} after {watched} s (bound {limit:g} s) and {len(result.samples)} probes "
            f"({result.consecutive_healthy} healthy in a row at the end)."
            + "".join(f"\n\n{n[:1].upper()}{n[1:]}." for n in notes)))
        _plot_monitor(result.samples)
        return self.monitor

    def _not_monitored(self, limit: float, notes: list[str]) -> dict[str, Any]:
        """No time left for even one probe before the run's deadline: say so, as a verdict."""
        self.monitor = {"recovered": False, "samples": [], "duration_s": 0.0, "max_duration_s": max(limit, 0),
                        "notes": notes, "stopped_because": "no_time_left",
                        "verdict": "not monitored (no time left before the run's deadline)"}
        record.record("recovery_monitor", self.monitor, markdown=(
            "**NOT monitored**: " + "; ".join(notes) + ". Watch by hand: `watch -n 30 curl ...`"))
        return self.monitor

    def summary(self) -> dict[str, Any]:
        applied = [c for c in self.changes if c["applied"]]
        codes = sorted({str(p["status_code"] or "000") for p in (self.api.probes if self.api else [])
                        if p["classification"] != probes.OK})
        verdict = self.api.verdict if self.api else "unknown"
        provider = ("unknown" if not self.provider or not self.provider.readable else
                    "incident" if self.provider.ongoing else "no incident")
        watch = self.monitor["verdict"] if self.monitor else "not monitored"
        # "5xx" only when this runbook's probes saw one: "5xx partial (HTTP 429)" named a class nothing showed
        seen = (f"5xx {verdict} (HTTP {'/'.join(codes)})" if any(c.startswith("5") for c in codes) else
                f"no 5xx in the probes now ({verdict}, HTTP {'/'.join(codes) or '200'})")
        line = f"{seen}: provider {provider}; fallback {'applied' if applied else 'dry run'}; {watch}"
        value = {"line": line, "verdict": verdict, "codes": codes, "provider": provider,
                 "recovered": bool(self.monitor and self.monitor["recovered"]), "changes_applied": len(applied),
                 "incident_id": self.cfg["incident_id"]}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`")
        return value


def _show_figure(fig: Any) -> None:
    """Show a figure inline as a PNG when running in a kernel.

    The figures are built on matplotlib's object API (no pyplot state), so nothing is left to close
    and nothing is shown twice by the inline backend.
    """
    import io

    if record.ipython() is not None:
        from IPython.display import Image, display

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        display(Image(data=buf.getvalue(), format="png"))


def _plot_error_mix(frame: Any, start: float, end: float) -> Any:
    """The 5xx mix over the queried window [start, end] (epoch seconds), shown inline."""
    from ..analysis import plots

    if why := plots.missing():
        record.record("figure_error_mix", {"drawn": False, "reason": why}, markdown=f"_Figure not drawn: {why}._")
        return None
    fig = plots.error_mix(frame, start=start, end=end)
    _show_figure(fig)
    return fig


def _plot_monitor(samples: list[dict[str, Any]]) -> Any:
    """The recovery watch at the probes' own UTC times (each sample carries `at`), shown inline."""
    from ..analysis import plots

    if why := plots.missing():
        record.record("figure_recovery", {"drawn": False, "reason": why}, markdown=f"_Figure not drawn: {why}._")
        return None
    fig = plots.recovery_monitor(samples)
    _show_figure(fig)
    return fig
