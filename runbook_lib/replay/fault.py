"""Which fault the Mistral simulator plays in a replay, read from triage's recorded probes.

Why from the probes: they are what triage saw of the API (status codes, classes, latencies), and
the verdict under test was drawn from them; the simulator's modes (`sim/mistral.py`) cover the
classes below. A class no mode reproduces (403, DNS failure, a 4xx of our own) is refused by name
rather than replayed as something else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParameterError
from ..sim.mistral import SERVER_ERROR_STATUSES
from .source import ARG, Original

# The log classes (kube/logs.py classify_error) a probe class corresponds to, for the cross-check.
LOG_CLASS = {"connection_refused": "connection", "dns_failure": "connection", "network_error": "connection"}


@dataclass
class Fault:
    """The simulator's mode and options (`refuse`: its listener closed instead), and why."""

    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    refuse: bool = False
    why: str = ""
    approximate: str | None = None  # how the replay's fault differs from the original's, when it does

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "refused" if self.refuse else self.mode, "options": self.options, "why": self.why,
                "approximate": self.approximate}


def plan(original: Original) -> Fault:
    """The fault that makes triage's probes answer as recorded (see the module docstring)."""
    api = original.triage["mistral_api"]
    verdict = str(api.get("verdict") or "")
    probes = [p for p in api.get("probes") or [] if isinstance(p, dict)]
    codes = Counter(p.get("status_code") for p in probes if isinstance(p.get("status_code"), int))
    seen = f"triage's {len(probes)} probe(s): {dict(api.get('counts') or {})}"
    if verdict == "ok":
        median = api.get("latency_ms_median")
        if api.get("slow") and isinstance(median, int | float):
            return Fault("slow", {"latency_s": round(median / 1000, 3)}, why=f"{seen}, slow (median {median} ms)")
        return Fault("ok", why=seen)
    if verdict in ("auth_failure", "rate_limited", "capacity_exceeded"):
        return Fault(verdict, why=seen)
    if verdict == "server_error":
        fives = [c for c, _ in codes.most_common() if c in SERVER_ERROR_STATUSES]
        status = fives[0] if fives else 503
        approx = None if fives and len([c for c in codes if c >= 500]) == 1 else \
            f"recorded 5xx codes {dict(codes)}; the simulator answers {status} to every call"
        return Fault("server_error", {"status": status}, why=f"{seen}, status {status}", approximate=approx)
    if verdict == "timeout":
        return Fault("hang", why=f"{seen}: no answer within timeout_s, so the simulator never answers")
    if verdict == "connection_refused":
        return Fault("refused", refuse=True, why=f"{seen}: the simulator's listener is closed")
    if verdict == "partial":
        fraction = float(api.get("error_fraction") or 0.5)
        return Fault("flaky", {"fail_fraction": fraction}, why=f"{seen}: some calls failed",
                     approximate="the simulator's flaky mode fails calls at random, half 503 and half 429, "
                                 f"whatever the recorded mix ({dict(api.get('counts') or {})})")
    raise ParameterError(ARG, str(original.path), "an incident whose recorded API answers the simulator can "
                         "play (ok, slow, auth_failure, rate_limited, capacity_exceeded, server_error, timeout, "
                         f"connection_refused, partial); triage's probes say {verdict or 'nothing'!r} "
                         f"({seen}), which no simulator mode reproduces")


def logs_agree(original: Original, fault: Fault) -> bool | None:
    """Whether the pod logs' main error class is the probes' (None: no logs, or no failed call in them)."""
    logs = original.logs or {}
    dominant = logs.get("dominant")
    if not dominant:
        return None
    verdict = str(original.triage["mistral_api"].get("verdict") or "")
    if verdict in ("ok", "partial"):
        return None  # no one class to hold the logs to
    return LOG_CLASS.get(verdict, verdict) == dominant or (fault.mode == "hang" and dominant == "timeout")
