"""The 429 runbook's steps (notebooks/diagnose_rate_limit.ipynb), one public method per cell.

Seed, 429 Rate Limited: 1 check the rate-limit headers; 2 enable request queuing
(`RATE_LIMIT_MODE=queue`); 3 reduce concurrency (`MAX_CONCURRENT_REQUESTS`); 4 long term, ask
Mistral for a higher limit. Here the headers come from a short bounded sample, the kind of limit
is told apart (requests, tokens, provider capacity), the concurrency is computed from what was
measured with the arithmetic shown, and the changes are dry runs unless `apply_changes` is True.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import display, params, record
from ..sources import probes
from ..analysis import ratelimit
from . import steps
from .._async import run_sync
from ..secrets import SecretRef, refuses_secret_parameters

LIMITS_PAGE = ratelimit.LIMITS_PAGE


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, sample_requests: int, sample_interval_s: float, max_concurrent_requests: int,
          **common: Any) -> RateLimitRunbook:
    """Validate every parameter first; a wrong one names itself and what is accepted."""
    cfg = steps.common_parameters(**common)  # the parameters every diagnosis notebook shares
    if isinstance(max_concurrent_requests, bool) or not isinstance(max_concurrent_requests, int) \
            or not 0 <= max_concurrent_requests <= 10_000:
        raise params.ParameterError("max_concurrent_requests", max_concurrent_requests,
                                    "0 (use the computed recommendation) or a whole number up to 10000")
    cfg.update(sample_requests=params.positive_int("sample_requests", sample_requests, maximum=30),
               sample_interval_s=params.timeout("sample_interval_s", sample_interval_s, maximum=10),
               max_concurrent_requests=max_concurrent_requests)
    return RateLimitRunbook(cfg, steps.show_parameters(cfg))


class RateLimitRunbook:
    def __init__(self, cfg: dict[str, Any], secret: SecretRef) -> None:
        self.cfg = cfg
        self.secret = secret
        self.samples: list[dict[str, Any]] = []
        self.kind: str | None = None
        self.limits: ratelimit.Limits | None = None
        self.traffic: dict[str, Any] = {}
        self.recommendation: ratelimit.Recommendation | None = None
        self.changes: list[dict[str, Any]] = []

    # 1. headers ------------------------------------------------------------------------------
    def sample_headers(self) -> dict[str, Any]:
        """`sample_requests` probes, `sample_interval_s` apart, each bounded: the headers over time."""
        cfg = self.cfg

        async def go() -> list[probes.ProbeResult]:
            out = []
            async with probes.client(cfg["timeout_s"], tls=cfg["mistral_url"].startswith("https:"),
                                     ca_bundle=cfg["ca_bundle"]) as c:
                for i in range(cfg["sample_requests"]):
                    if i:
                        await asyncio.sleep(cfg["sample_interval_s"])
                    out.append(await probes.probe_mistral(c, cfg["mistral_url"], self.secret, cfg["timeout_s"]))
            return out

        results = run_sync(go())
        self.samples = [r.to_dict() for r in results]
        merged: dict[str, str] = {}
        for r in results:
            merged.update(r.ratelimit)
        self.limits = ratelimit.Limits.from_headers(merged)
        self.kind = ratelimit.kind_of_limit([r.classification for r in results], self.limits)
        rows = [(r.started_at, r.status_code or "000", r.classification,
                 r.ratelimit.get("x-ratelimit-remaining-req-minute", "n/a"),
                 r.ratelimit.get("x-ratelimit-remaining-tokens-minute", "n/a"),
                 r.ratelimit.get("x-ratelimit-remaining-req-month", "n/a"),
                 r.ratelimit.get("x-ratelimit-remaining-tokens-month", "n/a"), r.retry_after or "none")
                for r in results]
        value = {"samples": self.samples, "limits": self.limits.__dict__, "kind": self.kind}
        md = (display.table(("sent (UTC)", "HTTP", "class", "remaining req/min", "remaining tokens/min",
                             "remaining req/month", "remaining tokens/month", "Retry-After"), rows)
              + "\n\n" + display.kv_table(self.limits.__dict__.items(), ("limit (latest headers)", "value")))
        record.record("rate_limit_headers", value, markdown=md)
        return value

    # 2. which limit --------------------------------------------------------------------------
    def which_limit(self) -> dict[str, Any]:
        words = {
            ratelimit.REQUEST_LIMIT: "our workspace's **request** limit is used up (429 `rate_limited`, code 1300, "
                                     "requests remaining 0): reduce request concurrency, queue",
            ratelimit.TOKEN_LIMIT: "our workspace's **token** limit is used up (requests remain): shorter prompts, "
                                   "lower `max_tokens`, queue",
            ratelimit.CAPACITY: "Mistral's **service tier capacity** for this model is exceeded (our counters still "
                                "have room): not our limit; retry with backoff, or use another model",
            ratelimit.MONTHLY_QUOTA: "our workspace's **monthly** quota (requests or tokens) is used up: no "
                                     "per-minute reset helps; it resets at the start of next month "
                                     f"(`x-ratelimit-reset-tokens-month`), or raise it at {LIMITS_PAGE}",
            ratelimit.NONE: "no 429 in the sample: the limit is not being hit right now",
            ratelimit.UNKNOWN: "429 without usable headers: treat as a request limit",
        }
        value = {"kind": self.kind, "explanation": words[self.kind or ratelimit.UNKNOWN]}
        record.record("limit_kind", value, markdown=f"**{self.kind}**: {value['explanation']}.")
        return value

    # 3. traffic and recommendation ------------------------------------------------------------
    def recommend(self) -> dict[str, Any]:
        """MAX_CONCURRENT_REQUESTS from the limits and the measured latency and traffic (Little's law)."""
        cfg = self.cfg
        latency_s, rps, source = self._traffic()
        self.traffic = {"latency_s": latency_s, "requests_per_s": rps, "source": source}
        limits = self.limits or ratelimit.Limits(None, None, None, None, None)
        if limits.req_limit_minute == 0:  # fault headers say 0: use the sampled normal limit if any
            normal = [p["ratelimit"] for p in self.samples if p["ratelimit"].get("x-ratelimit-limit-req-minute", "0") != "0"]
            if normal:
                limits = ratelimit.Limits.from_headers(normal[-1])
        rec = ratelimit.recommend_concurrency(limits, latency_s=latency_s, current_rps=rps)
        if cfg["max_concurrent_requests"]:
            rec.arithmetic.append(f"overridden by the parameter: {cfg['max_concurrent_requests']}")
            rec.max_concurrent_requests = cfg["max_concurrent_requests"]
        elif rec.max_concurrent_requests is None:
            rec.max_concurrent_requests = 1
            rec.arithmetic.append("no usable limit: fall back to 1 concurrent request until the limit resets")
        self.recommendation = rec
        md = (f"Traffic from {source}: {_fmt(rps, ' req/s')}, latency {_fmt(latency_s, ' s')}.\n\n"
              + "\n".join(f"- {step}" for step in rec.arithmetic)
              + f"\n\n**Recommended `MAX_CONCURRENT_REQUESTS={rec.max_concurrent_requests}`**"
              + (f"\n\n{rec.caveat}" if rec.caveat else ""))
        value = {**self.traffic, **rec.to_dict()}
        record.record("recommendation", value, markdown=md)
        return value

    def _traffic(self) -> tuple[float | None, float | None, str]:
        cfg = self.cfg
        note = ""  # why Prometheus did not give the traffic, said beside the source that did
        if cfg["prometheus_url"]:
            from ..sources import metrics

            w, prom = cfg["metrics_window"], metrics.Prometheus.from_config(cfg)
            rate = metrics.instant_sync(prom, f"sum(rate(mistral_requests_total[{w}]))", cfg["timeout_s"])
            rps = rate.scalar()
            if rps is not None:
                p95 = metrics.instant_sync(prom, "histogram_quantile(0.95, sum by (le) "
                                           f"(rate(mistral_request_duration_seconds_bucket[{w}])))",
                                           cfg["timeout_s"]).scalar()
                return p95, rps, f"Prometheus (window {w})"
            note = f" (Prometheus {rate.status}: {rate.error or 'no data'})"
        if cfg["service_health_url"]:
            async def health() -> probes.ServiceHealth:
                async with probes.client(cfg["timeout_s"], tls=cfg["service_health_url"].startswith("https:"),
                                         ca_bundle=cfg["ca_bundle"]) as c:
                    return await probes.probe_service(c, cfg["service_health_url"], cfg["timeout_s"])

            p95 = (run_sync(health()).mistral or {}).get("p95_latency_ms")
            if p95:
                return p95 / 1000, None, "our service's /health" + note
        ok = [p["latency_ms"] for p in self.samples if p["classification"] == probes.OK]
        return (max(ok) / 1000 if ok else None), None, "the probes above" + note

    # 4. mitigation ---------------------------------------------------------------------------
    def mitigate(self) -> dict[str, Any]:
        """Seed steps 2 and 3 as one env change: queue mode and the recommended concurrency."""
        from .. import kube
        from ..kube import write as remediate

        cfg = self.cfg
        n = self.recommendation.max_concurrent_requests if self.recommendation else 1
        with kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"]) as cluster:
            change = remediate.plan_env(cluster, cfg["namespace"], cfg["deployment"],
                                        {"RATE_LIMIT_MODE": "queue", "MAX_CONCURRENT_REQUESTS": str(n)},
                                        cfg["container"], apply_changes=cfg["apply_changes"], operator=cfg["operator"],
                                        incident=cfg["incident_id"], timeout_s=cfg["timeout_s"])
        value = steps.show_change("change_rate_limit_env", change)
        self.changes.append(value)
        return value

    # 5. long term ------------------------------------------------------------------------------
    def long_term(self) -> None:
        limits = self.limits.__dict__ if self.limits else {}
        md = (f"- Check the workspace limits: {LIMITS_PAGE} (current: {limits.get('req_limit_minute', 'n/a')} "
              f"requests/min, {limits.get('tokens_limit_minute', 'n/a')} tokens/min; this month "
              f"{limits.get('req_remaining_month', 'n/a')} of {limits.get('req_limit_month', 'n/a')} requests and "
              f"{limits.get('tokens_remaining_month', 'n/a')} of {limits.get('tokens_limit_month', 'n/a')} tokens left"
              + (f", reset in {limits['tokens_reset_month_s'] / 86400:.1f} days"
                 if limits.get('tokens_reset_month_s') is not None else "") + ").\n"
              "- If the traffic is legitimate, ask Mistral for a higher tier (console.mistral.ai or support@mistral.ai).\n"
              "- Make the client honour 429s: backoff with jitter, and a queue instead of failing requests.")
        record.record("long_term", {"limits_page": LIMITS_PAGE, "limits": limits}, markdown=md)

    # 6. communications -------------------------------------------------------------------------
    def communicate(self) -> dict[str, Any]:
        applied = any(c["applied"] for c in self.changes)
        n = self.recommendation.max_concurrent_requests if self.recommendation else "n/a"
        level = steps.incident_severity(self.cfg, "P2", "rate limited (429): the runbook's table files it as P2 "
                                        "unless every call fails", by="diagnose_rate_limit")
        return steps.communicate(
            self.cfg, by="diagnose_rate_limit", level=level, status="MITIGATING" if applied else "INVESTIGATING",
            impact=("Users cannot use AI features: every request is rejected by the provider's rate limit"
                    if level == "P1" else "Some AI requests are rejected or delayed by the provider's rate limit"),
            action=(f"Queuing requests and lowering concurrency to {n}" if applied else
                    "Diagnosing the rate limit; mitigation prepared as a dry run"))

    # 7. state after ------------------------------------------------------------------------------
    def state_after(self) -> dict[str, Any]:
        return steps.state_after(self.cfg, self.secret)

    def summary(self) -> dict[str, Any]:
        applied = [c for c in self.changes if c["applied"]]
        line = (f"429 {self.kind}: MAX_CONCURRENT_REQUESTS={self.recommendation.max_concurrent_requests if self.recommendation else 'n/a'}"
                f", {'applied' if applied else 'dry run'}")
        value = {"line": line, "kind": self.kind, "changes_applied": len(applied), "incident_id": self.cfg["incident_id"]}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`")
        return value


def _fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.3g}{unit}"
