"""The quick-triage runbook's steps, one public method per notebook cell.

`start()` validates every parameter first (so a wrong one fails in the first cell, named);
`collect()` runs every independent check at once, each bounded, so a run with every dependency
hanging still takes about one timeout; the step methods then show and record what was seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..analysis import decision as decision_mod
from .. import display, params, record
from ..sources import probes
from ..analysis import severity as severity_mod
from .._async import run_sync
from ..secrets import SecretRef, read_secret, refuses_secret_parameters

NOT_CONFIGURED, UNAVAILABLE, AVAILABLE = "not configured", "unavailable", "ok"


@dataclass(frozen=True)
class TriageConfig:
    mistral_url: str
    api_key_env: str
    service_health_url: str
    ca_bundle: str
    prometheus_url: str
    metrics_window: str
    prometheus_bearer_token_file: str
    prometheus_username: str
    prometheus_password_env: str
    prometheus_ca_bundle: str
    prometheus_client_cert: str
    prometheus_client_key: str
    prometheus_headers: tuple[tuple[str, str], ...]
    metrics_selector: str
    kubeconfig: str
    kube_context: str
    namespace: str
    label_selector: str
    timeout_s: float
    samples: int
    latency_threshold_ms: float
    incident_id: str
    operator: str


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, mistral_url: str, api_key_env: str, service_health_url: str, ca_bundle: str = "", prometheus_url: str = "",
          metrics_window: str = "5m", prometheus_bearer_token_file: str = "", prometheus_username: str = "",
          prometheus_password_env: str = "", prometheus_ca_bundle: str = "", prometheus_client_cert: str = "",
          prometheus_client_key: str = "", prometheus_headers: str = "", metrics_selector: str = "",
          kubeconfig: str = "", kube_context: str = "",
          namespace: str = "default", label_selector: str = "app=mistral-service", timeout_s: float = 5.0,
          samples: int = 5, latency_threshold_ms: float = 2000.0, incident_id: str = "local",
          operator: str = "") -> Triage:
    """Validate the parameters (ParameterError names the first bad one) and show them."""
    common = params.shared(
        mistral_url=mistral_url, api_key_env=api_key_env, service_health_url=service_health_url,
        ca_bundle=ca_bundle, prometheus_url=prometheus_url, metrics_window=metrics_window)
    access = params.prometheus_access(
        prometheus_bearer_token_file=prometheus_bearer_token_file, prometheus_username=prometheus_username,
        prometheus_password_env=prometheus_password_env, prometheus_ca_bundle=prometheus_ca_bundle,
        prometheus_client_cert=prometheus_client_cert, prometheus_client_key=prometheus_client_key,
        prometheus_headers=prometheus_headers, metrics_selector=metrics_selector)
    cluster = params.shared(kubeconfig=kubeconfig, kube_context=kube_context, namespace=namespace,
                            label_selector=label_selector, timeout_s=timeout_s)
    cfg = TriageConfig(
        **common, **access, **cluster,
        samples=params.positive_int("samples", samples, maximum=20),
        latency_threshold_ms=params.timeout("latency_threshold_ms", latency_threshold_ms, maximum=600_000),
        **params.shared(incident_id=incident_id, operator=operator),
    )
    run = Triage(cfg, read_secret(cfg.api_key_env))
    run.show_parameters()
    return run


class Triage:
    """State of one triage run; each method is one notebook step."""

    def __init__(self, cfg: TriageConfig, secret: SecretRef) -> None:
        self.cfg = cfg
        self.secret = secret
        self.api: dict[str, Any] | None = None
        self.service: dict[str, Any] | None = None
        self.metrics: dict[str, Any] = {"status": NOT_CONFIGURED}
        self.logs: dict[str, Any] = {"status": NOT_CONFIGURED}
        self.timings: dict[str, float] = {}
        self._severity: severity_mod.Severity | None = None
        self._decision: decision_mod.Decision | None = None

    # -- parameters -------------------------------------------------------------------------
    def show_parameters(self) -> None:
        safe = {k: v for k, v in asdict(self.cfg).items()}
        record.record("parameters", safe, markdown="**Parameters accepted.**\n\n" + display.kv_table(
            safe.items(), ("parameter", "value")))
        key = self.secret.describe()
        note = (f"API key from `${self.secret.env_var}`: **{'present' if self.secret.present else 'ABSENT'}**"
                + (f", {self.secret.length} characters, fingerprint `{self.secret.fingerprint}` "
                   "(SHA-256; the key itself is never shown)" if self.secret.present else
                   " - probes will be sent without a key and should get 401"))
        record.record("api_key", key, markdown=note)

    # -- collection -------------------------------------------------------------------------
    def collect(self) -> None:
        """Run every independent check concurrently; each is bounded by `timeout_s`."""
        t0 = time.perf_counter()
        run_sync(self._collect())
        self.timings["total_s"] = round(time.perf_counter() - t0, 3)
        rows = [(name, f"{secs:.2f} s") for name, secs in self.timings.items() if name != "total_s"]
        rows.append(("**all checks (concurrent)**", f"**{self.timings['total_s']:.2f} s**"))
        record.record("collection", {"timings_s": self.timings, "timeout_s": self.cfg.timeout_s},
                      markdown=f"Checked concurrently, each bounded by {self.cfg.timeout_s:g} s:\n\n"
                               + display.table(("check", "took"), rows))

    async def _timed(self, name: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await coro
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)

    async def _collect(self) -> None:
        cfg = self.cfg
        targets = (cfg.mistral_url, cfg.service_health_url)  # Prometheus has a client of its own (credentials)
        tls = any(t.startswith("https:") for t in targets)
        async with probes.client(cfg.timeout_s, tls=tls, ca_bundle=cfg.ca_bundle) as client:
            jobs: dict[str, Any] = {
                "mistral_api": self._timed("mistral_api", probes.sample_mistral(
                    client, cfg.mistral_url, self.secret, cfg.timeout_s, cfg.samples, cfg.latency_threshold_ms)),
            }
            if cfg.service_health_url:
                jobs["service_health"] = self._timed("service_health", probes.probe_service(
                    client, cfg.service_health_url, cfg.timeout_s))
            if cfg.prometheus_url:
                from ..sources import metrics

                jobs["metrics"] = self._timed("metrics", metrics.triage_metrics(
                    metrics.Prometheus.from_config(asdict(cfg)), cfg.metrics_window, cfg.timeout_s))
            if kube_configured(cfg.kubeconfig):
                from .. import kube

                jobs["cluster"] = self._timed("cluster", in_daemon_thread(
                    cfg.timeout_s + 1.0, _cluster_unreachable, kube.recent_errors, cfg.kubeconfig,
                    cfg.kube_context, cfg.namespace, cfg.label_selector, since_s=300, tail=10,
                    timeout_s=cfg.timeout_s))
            results = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
            api = results["mistral_api"]
            if api.slow and len(jobs) > 1:  # timed beside the other checks: confirm alone
                api = probes.confirm_slow(api, await self._timed("mistral_api_confirm", probes.sample_mistral(
                    client, cfg.mistral_url, self.secret, cfg.timeout_s, cfg.samples, cfg.latency_threshold_ms)))
        self.api = api.to_dict()
        if "service_health" in results:
            self.service = results["service_health"].to_dict()
        if "metrics" in results:
            self.metrics = _metrics_summary(results["metrics"])
        if "cluster" in results:
            self.logs = results["cluster"]
        if self.metrics["status"] not in (AVAILABLE, NOT_CONFIGURED) and self.logs["status"] == AVAILABLE:
            self.metrics["estimate"] = await self._timed("metrics_from_logs", self._estimate_from_logs())

    async def _estimate_from_logs(self) -> dict[str, Any]:
        """Seed: "Prometheus down -> fall back to app logs": count request lines over the window."""
        from .. import kube
        from ..sources import logstats

        cfg = self.cfg
        window_s = _window_seconds(cfg.metrics_window)

        def read() -> dict[str, Any]:
            with kube.connect(cfg.kubeconfig, cfg.kube_context, cfg.timeout_s) as cluster:
                r = cluster.error_logs(cfg.namespace, cfg.label_selector, since_s=max(1, int(window_s)),
                                       tail=10_000, pattern=".")
            if not r.ok:
                return {"status": UNAVAILABLE, "reason": r.finding.message}  # type: ignore[union-attr]
            return {"status": AVAILABLE, "kubectl": r.kubectl,
                    **logstats.estimate_error_rate(r.data["lines"], window_s, no_source=r.data.get("note"))}

        return await in_daemon_thread(cfg.timeout_s + 1.0, _unavailable, read)

    # -- steps ------------------------------------------------------------------------------
    def mistral_api(self) -> dict[str, Any]:
        """Step 1: what `GET /v1/models` answered, per probe and in sum."""
        api = self._need(self.api)
        rows = [(p["started_at"], p["status_code"] or "000", p["classification"], f"{p['latency_ms']:.0f} ms",
                 p["detail"]) for p in api["probes"]]
        headline = "**" + (probes.MEANING.get(api["verdict"]) or
                           f"PARTIAL: {api['error_fraction']:.0%} of {api['samples']} probes failed, mostly "
                           f"{api['dominant_error']}") + "**"
        parts = [headline, display.table(("sent (UTC)", "HTTP", "class", "latency", "detail"), rows)]
        if api["ratelimit"]:
            parts.append("Rate-limit headers seen:\n\n" + display.kv_table(api["ratelimit"].items(),
                                                                          ("header", "value")))
        again = api.get("confirmation")
        if api["slow"]:
            parts.append(f"Median latency {api['latency_ms_median']:.0f} ms exceeds the "
                         f"{api['latency_threshold_ms']:.0f} ms threshold"
                         + (f"; sent again alone: {again['latency_ms_median']:.0f} ms, still slow." if again else "."))
        elif again:
            parts.append(f"Median latency {_ms_text(again['first_latency_ms_median'])} while the other checks ran "
                         f"in this process; sent again alone: {_ms_text(again['latency_ms_median'])}, under the "
                         f"{api['latency_threshold_ms']:.0f} ms threshold: not slow.")
        record.record("mistral_api", api, markdown="\n\n".join(parts))
        return api

    def service_health(self) -> dict[str, Any]:
        """Step 2: our service's own view of its Mistral dependency (`.services.mistral`)."""
        if not self.cfg.service_health_url:
            value: dict[str, Any] = {"status": NOT_CONFIGURED}
            record.record("service_health", value, markdown="Not configured (`service_health_url` is empty).")
            return value
        svc = self._need(self.service)
        md = f"**{svc['status'].upper()}** - {svc['detail']}"
        if svc["mistral"]:
            md += "\n\n" + display.kv_table(svc["mistral"].items(), ("`.services.mistral`", "value"))
        record.record("service_health", svc, markdown=md)
        return svc

    def error_rate(self) -> dict[str, Any]:
        """Step 3: error rate per model from Prometheus (the seed's `rate(mistral_errors_total[5m])`)."""
        m = self.metrics
        if m["status"] == NOT_CONFIGURED:
            md = "Not configured (`prometheus_url` is empty): skipped; the verdict rests on steps 1-2."
        elif m["status"] != AVAILABLE:
            md = f"**Prometheus {m['status']}**: {m.get('reason')}."
            est = m.get("estimate") or {}
            if est.get("status") == AVAILABLE and est.get("requests"):
                rows = [(model, _fmt(v["errors_per_s"]), _fmt(v["requests_per_s"]))
                        for model, v in est["per_model"].items()]
                md += (" Falling back to the app logs (the runbook's error table): **ESTIMATE** from "
                       f"{est['requests']} request log lines over {est['window_s']:g} s "
                       f"(`{est.get('kubectl', '')}`).\n\n" + display.table(("model", "errors/s (est.)",
                                                                              "requests/s (est.)"), rows)
                       + f"\n\nEstimated error ratio: **{_pct(est.get('error_ratio'))}** (from logs, not metrics).")
            elif est:
                md += f" The fallback to app logs found nothing usable: {est.get('reason') or 'no request lines'}."
            else:
                md += " The run goes on without metrics."
        else:
            rows = [(model, _fmt(v.get("errors_per_s")), _fmt(v.get("requests_per_s")))
                    for model, v in sorted(m["per_model"].items())]
            md = (display.table(("model", "errors/s", "requests/s"), rows) if rows else
                  "No series returned for the Mistral metrics (no data, which is not the same as 0).")
            by_code = m.get("errors_per_code") or {}
            if by_code:
                md += "\n\nErrors by code: " + ", ".join(
                    f"**{code}** {_fmt(rate)}/s" for code, rate in sorted(by_code.items(), key=lambda kv: -kv[1]))
            md += (f"\n\nError ratio: **{_pct(m.get('error_ratio'))}**, p95 latency: "
                   f"**{_fmt(m.get('p95_latency_s'), ' s')}** (window {self.cfg.metrics_window}"
                   + (f", series `{{{self.cfg.metrics_selector}}}`" if self.cfg.metrics_selector else
                      ", all series: no `metrics_selector`") + ").")
        record.record("error_rate", m, markdown=md)
        return m

    def error_logs(self) -> dict[str, Any]:
        """Step 4: recent error lines from the service's pods."""
        lg = self.logs
        if lg["status"] == NOT_CONFIGURED:
            md = ("Not configured (no `kubeconfig` parameter, `$KUBECONFIG`, `~/.kube/config` or in-cluster "
                  "service account): skipped; the verdict rests on the other steps.")
        elif lg["status"] != AVAILABLE:
            md = (f"**Cluster {lg['status']}**: {lg.get('reason')}\n\nThe run goes on without logs."
                  + (f" Equivalent command: `{lg['kubectl']}`" if lg.get("kubectl") else ""))
        else:
            md = f"`{lg['kubectl']}`\n\n"
            if lg.get("note"):  # the selector matched no pod: nothing was read, which is not "no errors"
                md += f"**{lg['note'][:1].upper()}{lg['note'][1:]}**."
            elif not lg["groups"]:
                md += f"No error lines in the last 5 minutes ({lg['scanned']} lines read)."
            else:
                md += (f"{lg['matched']} error lines of {lg['scanned']} read, by class:\n\n"
                       + display.table(("error class", "count", "example"),
                                       [(g["error_class"], g["count"], g.get("example", "")[:140]) for g in lg["groups"]])
                       + "\n\nLast lines:\n\n"
                       + display.table(("time (UTC)", "pod", "container", "class", "message"),
                                       [(x["ts"], x["pod"], x["container"], x["error_class"], x["msg"][:140])
                                        for x in lg["lines"]]))
            if lg.get("partial"):
                md += f"\n\n**Partial:** {lg.get('reason')}"
        record.record("error_logs", lg, markdown=md)
        return lg

    def unavailable_sections(self) -> list[str]:
        gaps = []
        if self.service and self.service["status"] in ("unreachable", "invalid"):
            gaps.append("service health")
        if self.metrics["status"] not in (AVAILABLE, NOT_CONFIGURED):
            gaps.append("metrics (Prometheus " + self.metrics["status"] + ")")
        if self.logs["status"] not in (AVAILABLE, NOT_CONFIGURED):
            gaps.append("logs (cluster " + self.logs["status"] + ")")
        return gaps

    def severity(self) -> dict[str, Any]:
        """Classify P1-P4 from everything above."""
        sev = severity_mod.classify(self._need(self.api), self.service, self._metrics_for_rules(),
                                    self.unavailable_sections())
        self._severity = sev
        md = (f"## {sev.level}: {sev.definition}\n\n{sev.reason}.\n\n"
              f"Response target: **{sev.response_target}**; status updates every {sev.update_every_min} min.")
        record.record("severity", sev.to_dict(), markdown=md)
        return sev.to_dict()

    def decision(self) -> dict[str, Any]:
        """Walk the decision tree to the next step."""
        dec = decision_mod.decide(self._need(self.api), self.service, self._metrics_for_rules())
        self._decision = dec
        nxt = display.next_runbook(dec.notebook, self.cfg.incident_id)
        md = f"Branch **{dec.branch}** - {dec.reason}.\n\nNext: {dec.action}; {nxt}."
        record.record("decision", dec.to_dict(), markdown=md)
        return dec.to_dict()

    def summary(self) -> dict[str, Any]:
        """One verdict line for the CLI, the archive and the reviewer."""
        sev = self._severity or severity_mod.Severity(**self.severity())
        dec = self._decision or decision_mod.Decision(**self.decision())
        api = self._need(self.api)
        label = verdict_label(api, dec.branch)
        target = dec.notebook or dec.branch
        line = f"{sev.level} {label} -> {target}"
        value = {"line": line, "severity": sev.level, "label": label, "branch": dec.branch,
                 "notebook": dec.notebook, "api_verdict": api["verdict"],
                 "service_status": (self.service or {}).get("status"),
                 "unavailable": self.unavailable_sections(), "incident_id": self.cfg.incident_id,
                 "operator": self.cfg.operator or None}
        rows = [("verdict", f"`{line}`"), ("severity", f"{sev.level} ({sev.response_target})"),
                ("why", sev.reason),
                ("next step", f"{dec.action}; {display.next_runbook(dec.notebook, self.cfg.incident_id)}"),
                ("sections unavailable", ", ".join(value["unavailable"]) or "none")]
        record.record(record.VERDICT, value, markdown="### Verdict\n\n" + display.kv_table(rows, ("", "")))
        return value

    # -- helpers ----------------------------------------------------------------------------
    def _metrics_for_rules(self) -> dict[str, Any] | None:
        if self.metrics["status"] != AVAILABLE:
            est = self.metrics.get("estimate") or {}
            if est.get("status") == AVAILABLE and est.get("error_ratio") is not None:
                return {"error_ratio": est["error_ratio"], "estimate": True,
                        "errors_per_code": est.get("errors_per_code") or {}}
            return None
        return {"error_ratio": self.metrics.get("error_ratio"), "p95_latency_s": self.metrics.get("p95_latency_s"),
                "latency_threshold_s": self.cfg.latency_threshold_ms / 1000,
                "errors_per_code": self.metrics.get("errors_per_code") or {}}

    @staticmethod
    def _need(value: dict[str, Any] | None) -> dict[str, Any]:
        if value is None:
            raise RuntimeError("run `collect()` first: no checks have been run yet")
        return value


def kube_configured(kubeconfig: str) -> bool:
    """Step 4 runs with an explicit kubeconfig, $KUBECONFIG, ~/.kube/config, or inside a pod."""
    import os

    return bool(kubeconfig or os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")
                or os.path.exists(os.path.expanduser("~/.kube/config")))


async def in_daemon_thread(deadline_s: float, on_error: Callable[[str], Any], fn: Any, /, *args: Any,
                           **kwargs: Any) -> Any:
    """Run blocking `fn` in a daemon thread, waiting at most `deadline_s`; `on_error(reason)` otherwise.

    Unlike `asyncio.to_thread`, a call stuck past its deadline can neither delay the verdict nor
    keep the interpreter (or `asyncio.run`'s executor shutdown) waiting for it.
    """
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def work() -> None:
        try:
            value: Any = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported as the section's reason
            value = on_error(f"{type(exc).__name__}: {exc}")
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(value))

    threading.Thread(target=work, name=f"runbook-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, deadline_s)
    except (asyncio.TimeoutError, TimeoutError):
        return on_error(f"no answer within {deadline_s:g} s")


def _ms_text(ms: float | None) -> str:
    return "no successful answer" if ms is None else f"{ms:.0f} ms"


def _unavailable(reason: str) -> dict[str, Any]:
    return {"status": UNAVAILABLE, "reason": reason}


def _cluster_unreachable(reason: str) -> dict[str, Any]:
    return {"status": UNAVAILABLE, "reason": f"cluster unreachable: {reason}"}


def _window_seconds(window: str) -> float:
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def verdict_label(api: dict[str, Any], branch: str) -> str:
    """Short words for the verdict line, e.g. `rate limited`, `capacity exceeded`."""
    if api["verdict"] == "partial":
        return f"partial {api['dominant_error'].replace('_', ' ')}"
    if api["verdict"] != probes.OK:
        return api["verdict"].replace("_", " ")
    if api.get("slow"):
        return "high latency"
    return {"our_service": "our service errors", "resolved": "no errors"}.get(branch, branch.replace("_", " "))


def _metrics_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Fold the step-3 query results into one record; unavailable/error are not zeros."""
    from ..sources import metrics

    statuses = {name: r.status for name, r in results.items()}
    if all(s == metrics.UNAVAILABLE for s in statuses.values()):
        return {"status": UNAVAILABLE, "reason": next(iter(results.values())).error}
    errors = {n: r.error for n, r in results.items() if r.status == metrics.ERROR}
    per_model: dict[str, dict[str, float | None]] = {}
    for key, field_name in (("errors_per_model", "errors_per_s"), ("requests_per_model", "requests_per_s")):
        for s in results[key].series:
            per_model.setdefault(s["labels"].get("model", "?"), {})[field_name] = s["value"]
    for values in per_model.values():  # requests but no error series: no error was ever counted
        if values.get("requests_per_s") is not None and "errors_per_s" not in values:
            values["errors_per_s"] = 0.0
    per_code = {str(s["labels"].get("code", "?")): s["value"] for s in results["errors_per_code"].series
                if s["value"] is not None}
    return {"status": AVAILABLE, "statuses": statuses, "errors": errors, "per_model": per_model,
            "errors_per_code": per_code,
            "error_ratio": results["error_ratio"].scalar(), "p95_latency_s": results["p95_latency_s"].scalar(),
            "queries": {n: r.query for n, r in results.items()}}


def _fmt(value: float | None, unit: str = "") -> str:
    return "no data" if value is None else f"{value:.3g}{unit}"


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value:.1%}"
