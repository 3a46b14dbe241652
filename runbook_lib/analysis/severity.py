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


def classify(api: dict[str, Any], service: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, unavailable: list[str] | None = None) -> Severity:
    """Severity from the API sample, our service's health, optional metrics, and gaps.

    `api` is `ApiSummary.to_dict()`, `service` is `ServiceHealth.to_dict()`, `metrics` may carry
    `error_ratio` (0-1) and `p95_latency_s` with `latency_threshold_s`.
    """
    verdict = api["verdict"]
    frac = float(api["error_fraction"])
    svc_status = (service or {}).get("status")
    svc_dep = (service or {}).get("mistral") or {}
    svc_rate = svc_dep.get("error_rate")
    m = metrics or {}
    m_ratio = m.get("error_ratio")

    # The seed files rate limiting under P2 ("partial 429s"; 429 step is P2) even when every call
    # is refused: the remedy is ours (less concurrency, queueing) and the limit resets. So when
    # 429s dominate, the service/metrics "everything fails" signals do not escalate to P1.
    rate_limited = (verdict in probes.RATE_CLASSES
                    or (verdict == "partial" and api.get("dominant_error") in probes.RATE_CLASSES)
                    or (verdict == probes.OK and str(svc_dep.get("last_status")) == "429"))

    # P1: everything failing, seen directly or by our own service.
    if frac == 1.0 and verdict not in probes.RATE_CLASSES:
        return _make("P1", f"complete outage: all {api['samples']} probes of the Mistral API failed "
                           f"({probes.MEANING.get(verdict, verdict)})")
    if not rate_limited and (svc_status == "down" or (svc_rate is not None and float(svc_rate) >= 1.0)):
        return _make("P1", "complete outage: every recent call from our service to Mistral failed "
                           f"(last error: {svc_dep.get('last_error') or 'n/a'})")
    if not rate_limited and m_ratio is not None and float(m_ratio) >= 0.99:
        return _make("P1", f"complete outage: error ratio {float(m_ratio):.0%} in the metrics")

    # P2: degraded.
    if frac == 1.0:
        return _make("P2", f"degraded: every probe was refused with 429 ({probes.MEANING[verdict]}); "
                           "rate limiting is P2 in the runbook's table")
    if rate_limited and (svc_status == "down" or (m_ratio is not None and float(m_ratio) >= 0.99)):
        return _make("P2", "degraded: our service's calls are refused with 429 (rate limited)")
    if frac >= DEGRADED_ERROR_FRACTION:
        return _make("P2", f"degraded: {frac:.0%} of probes failed (mostly {api['dominant_error']})")
    if api.get("slow"):
        return _make("P2", f"high latency: median {api['latency_ms_median']:.0f} ms over the "
                           f"{api['latency_threshold_ms']:.0f} ms threshold")
    if svc_rate is not None and float(svc_rate) >= DEGRADED_ERROR_FRACTION:
        return _make("P2", f"degraded: our service sees {float(svc_rate):.0%} of its Mistral calls fail")
    if m_ratio is not None and float(m_ratio) >= DEGRADED_ERROR_FRACTION:
        return _make("P2", f"degraded: error ratio {float(m_ratio):.0%} in the metrics")
    if m.get("p95_latency_s") is not None and m.get("latency_threshold_s") is not None \
            and float(m["p95_latency_s"]) > float(m["latency_threshold_s"]):
        return _make("P2", f"high latency: p95 {float(m['p95_latency_s']):.2f} s in the metrics")
    if svc_status in ("unreachable", "invalid"):
        return _make("P2", f"our service's health endpoint is {svc_status}: user impact unknown, "
                           "treated as degraded until shown otherwise")

    # P3: some errors.
    if frac > 0:
        return _make("P3", f"occasional errors: {frac:.0%} of probes failed ({api['dominant_error']})")
    if svc_rate is not None and float(svc_rate) > 0:
        return _make("P3", f"occasional errors: our service sees {float(svc_rate):.0%} of calls fail")
    if m_ratio is not None and float(m_ratio) > 0:
        return _make("P3", f"occasional errors: error ratio {float(m_ratio):.1%} in the metrics")

    # P4: no user impact.
    gaps = [u for u in (unavailable or []) if u]
    if gaps:
        return _make("P4", "no user impact seen; monitoring gaps: " + ", ".join(gaps))
    return _make("P4", "no user impact seen: all probes succeeded and our service reports no errors")
