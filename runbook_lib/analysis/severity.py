"""The seed's P1-P4 table as ordered rules over what triage measured.

| Level | Definition       | Response time     | Example                               |
| P1    | Complete outage  | < 15 min          | all Mistral requests failing          |
| P2    | Degraded service | < 1 hour          | high latency, partial 429s            |
| P3    | Minor impact     | < 4 hours         | occasional errors                     |
| P4    | No user impact   | next business day | monitoring gaps                       |

Rules are checked from P1 down and the first that matches wins, so the result is the worst
level the evidence supports; the reason says which evidence decided it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..sources import probes

RESPONSE_TARGET = {"P1": "< 15 min", "P2": "< 1 hour", "P3": "< 4 hours", "P4": "next business day"}
DEFINITION = {"P1": "Complete outage", "P2": "Degraded service", "P3": "Minor impact", "P4": "No user impact"}
# Status-update cadence for communications (seed: "typically every 15-30 min for P1").
UPDATE_EVERY_MIN = {"P1": 15, "P2": 30, "P3": 60, "P4": 240}

DEGRADED_ERROR_FRACTION = 0.5   # at or above: degraded (P2); below: occasional errors (P3)


@dataclass(frozen=True)
class Severity:
    level: str
    definition: str
    reason: str
    response_target: str
    update_every_min: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make(level: str, reason: str) -> Severity:
    return Severity(level, DEFINITION[level], reason, RESPONSE_TARGET[level], UPDATE_EVERY_MIN[level])


def _num(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def user_impact(service: dict[str, Any] | None, metrics: dict[str, Any] | None,
                latency_threshold_s: float | None = None) -> dict[str, Any] | None:
    """What our users get, from our service's own view (first) or the metrics: error ratio and latency.

    None when neither says anything (service not configured or unreachable, no metrics): then only
    the probes are left, and the severity says so.
    """
    svc_dep = (service or {}).get("mistral") or {}
    svc_rate, svc_requests = _num(svc_dep.get("error_rate")), _num(svc_dep.get("requests"))
    m = metrics or {}
    threshold = latency_threshold_s if latency_threshold_s is not None else _num(m.get("latency_threshold_s"))
    if (service or {}).get("status") in ("ok", "degraded", "down") and svc_rate is not None and svc_requests != 0:
        p95_ms = _num(svc_dep.get("p95_latency_ms"))
        return {"source": "our service's health", "error_ratio": svc_rate,
                "p95_latency_s": None if p95_ms is None else p95_ms / 1000, "latency_threshold_s": threshold,
                "last_error": svc_dep.get("last_error")}
    if _num(m.get("error_ratio")) is not None:
        return {"source": "metrics (estimate from logs)" if m.get("estimate") else "metrics",
                "error_ratio": _num(m["error_ratio"]), "p95_latency_s": _num(m.get("p95_latency_s")),
                "latency_threshold_s": threshold, "last_error": None}
    return None


def classify(api: dict[str, Any], service: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, unavailable: list[str] | None = None) -> Severity:
    """Severity from what our users get (our service, else metrics), then the API probes, then gaps.

    The runbook's table defines levels by impact on users, so our service's error ratio and latency
    decide when they are known: all calls failing is P1 whatever the cause (a 429 outage is an
    outage), and probes that fail while our service's calls succeed are not an outage (a probe's
    bound can be shorter than the service's own timeout). Only without a user-side signal do the
    probes decide, and then rate limiting stays P2 as the seed files it (the limit resets).
    `api` is `ApiSummary.to_dict()`, `service` is `ServiceHealth.to_dict()`, `metrics` may carry
    `error_ratio` (0-1) and `p95_latency_s` with `latency_threshold_s`.
    """
    verdict = api["verdict"]
    frac = float(api["error_fraction"])
    probes_say = (f"{frac:.0%} of {api['samples']} probes failed"
                  + (f" ({probes.MEANING.get(verdict, verdict)})" if frac else ""))
    user = user_impact(service, metrics, (metrics or {}).get("latency_threshold_s")
                       or (api.get("latency_threshold_ms") or 0) / 1000 or None)
    if user is not None:
        ratio, src = user["error_ratio"], user["source"]
        p95, limit = user["p95_latency_s"], user["latency_threshold_s"]
        if ratio >= 0.99:
            return _make("P1", f"complete outage: {ratio:.0%} of our calls to Mistral fail ({src}"
                               + (f"; last error: {user['last_error']}" if user.get("last_error") else "") + ")")
        if ratio >= DEGRADED_ERROR_FRACTION:
            return _make("P2", f"degraded: {ratio:.0%} of our calls to Mistral fail ({src})")
        if p95 is not None and limit is not None and p95 > limit:
            return _make("P2", f"high latency: our calls' p95 is {p95:.2f} s, over the {limit:g} s threshold ({src})")
        if verdict == probes.TIMEOUT and frac == 1.0:
            # Our service's view covers calls that completed; calls hanging now are not in it yet.
            return _make("P1", f"calls hang: all {api['samples']} probes got no answer in time, while our service's "
                               f"last completed calls look fine ({src}: {ratio:.0%} errors): calls started since "
                               "have not returned")
        if api.get("slow"):
            return _make("P2", f"high latency: the probes' median {api['latency_ms_median']:.0f} ms is over the "
                               f"{api['latency_threshold_ms']:.0f} ms threshold ({src} does not show it yet)")
        if ratio > 0:
            return _make("P3", f"occasional errors: {ratio:.1%} of our calls fail ({src})")
        if frac > 0:
            return _make("P3", f"our calls succeed ({src}: 0% errors) but {probes_say}: no user impact "
                               "measured yet, watch it")
        gaps = [u for u in (unavailable or []) if u]
        if gaps:
            return _make("P4", f"no user impact seen ({src}); monitoring gaps: " + ", ".join(gaps))
        return _make("P4", f"no user impact seen: {src} shows 0% errors and the probes succeeded")

    # No user-side signal: the probes decide, and the reason says so.
    only = " (from the probes only: our service's view and metrics are not available)"
    if frac == 1.0 and verdict not in probes.RATE_CLASSES:
        return _make("P1", f"complete outage: all {api['samples']} probes of the Mistral API failed "
                           f"({probes.MEANING.get(verdict, verdict)})" + only)
    if frac == 1.0:
        return _make("P2", f"degraded: every probe was refused with 429 ({probes.MEANING[verdict]}); "
                           "rate limiting is P2 in the runbook's table" + only)
    if frac >= DEGRADED_ERROR_FRACTION:
        return _make("P2", f"degraded: {frac:.0%} of probes failed (mostly {api['dominant_error']})" + only)
    if api.get("slow"):
        return _make("P2", f"high latency: median {api['latency_ms_median']:.0f} ms over the "
                           f"{api['latency_threshold_ms']:.0f} ms threshold" + only)
    if (service or {}).get("status") in ("unreachable", "invalid"):
        return _make("P2", f"our service's health endpoint is {service['status']}: user impact unknown, "
                           "treated as degraded until shown otherwise")
    if frac > 0:
        return _make("P3", f"occasional errors: {frac:.0%} of probes failed ({api['dominant_error']})" + only)
    gaps = [u for u in (unavailable or []) if u]
    if gaps:
        return _make("P4", "no user impact seen; monitoring gaps: " + ", ".join(gaps))
    return _make("P4", "no user impact seen: all probes succeeded" + only)


LEVELS = ("P1", "P2", "P3", "P4")


def worse(a: str | None, b: str | None) -> str | None:
    """The more severe of two levels (P1 is the worst); None counts as unknown."""
    known = [x for x in (a, b) if x in LEVELS]
    return min(known, key=LEVELS.index) if known else None


def from_impact(impact: dict[str, Any]) -> tuple[str, str] | None:
    """The level the measured impact supports (postmortem): the share of bad calls in the episode.

    Triage judges from a few seconds of evidence; the postmortem has the whole episode. All calls
    bad is a complete outage (P1) whatever the triage could see when it ran.
    """
    if not impact.get("found"):
        return None
    bad = int(impact.get("bad_requests", impact.get("failed_requests")) or 0)
    failed = int(impact.get("failed_requests") or 0)
    total = max(int(impact.get("requests") or 0), bad)
    if total == 0:
        return None
    span = f"{bad:,} of {total:,} calls bad ({failed:,} failed) over {impact.get('duration_s') or 0:.0f} s (measured)"
    # the table: P1 = requests failing; slow but answered calls are "high latency", P2
    if failed / total >= 0.99:
        return "P1", f"complete outage: {span}"
    if failed > 0 and bad == total:  # a hang: what did not time out was answered only after it ended
        return "P1", f"complete outage: no call was answered in time during the episode, {span}"
    if failed > 0 and _hung(impact):
        return "P1", (f"complete outage: no call was answered in time for {impact['unanswered_s']:.0f} s "
                      f"of the episode, {span}")
    if bad / total >= DEGRADED_ERROR_FRACTION:
        return "P2", f"degraded: {bad / total:.0%} of calls bad, {span}"
    return "P3", f"minor impact: {bad / total:.0%} of calls bad, {span}"


HUNG_SHARE = 0.6  # of the episode with no call answered in time, in one stretch: a complete outage


def _hung(impact: dict[str, Any]) -> bool:
    """Whether the episode is a hang although some of its calls were good: for most of it (one stretch of
    at least HUNG_SHARE) no call was answered in time. Its edges hold good calls: calls are counted when
    they end, so a call that times out after the fault ended shares its step with calls answered by then."""
    duration, stretch = float(impact.get("duration_s") or 0.0), float(impact.get("unanswered_s") or 0.0)
    step = float(impact.get("step_s") or 0.0)
    return duration >= 3 * step > 0 and stretch >= HUNG_SHARE * duration


MIN_CALLS_TO_REASSESS = 10  # fewer calls in the measured episode: the declared level stands


def reassess(declared: str | None, impact: dict[str, Any]) -> tuple[str, str] | None:
    """The level the postmortem sets from the whole measured episode, with why; None to keep `declared`.

    Raised to what the measurement supports; lowered only when it refutes the declared level
    outright: no call failed in an episode of at least MIN_CALLS_TO_REASSESS calls. Triage judges
    from seconds of evidence (a slow API looks like a hang until its calls complete, and was left at
    P1 while no call failed); the episode's edges dilute the shares otherwise (150 calls, 140 failed,
    for a total outage), so a share below P1's is no reason to lower.
    """
    measured = from_impact(impact)
    if measured is None or measured[0] == declared:
        return None
    if worse(declared, measured[0]) != declared:
        return measured
    calls = max(int(impact.get("requests") or 0), int(impact.get("bad_requests") or 0))
    if calls >= MIN_CALLS_TO_REASSESS and not int(impact.get("failed_requests") or 0):
        return measured[0], f"re-assessed from the whole episode (declared {declared}): {measured[1]}"
    return None
