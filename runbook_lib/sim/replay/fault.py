"""Which fault the Mistral simulator plays in a replay, read from triage's recorded probes.

Why from the probes: they are what triage saw of the API (status codes, classes, latencies), and
the verdict under test was drawn from them; the simulator's modes (`sim/mistral.py`) cover the
classes below. A class no mode reproduces (403, DNS failure, a 4xx of our own) is refused by name
rather than replayed as something else.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...errors import ParameterError
from ..mistral import SERVER_ERROR_STATUSES
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
    script: list[dict[str, Any]] = field(default_factory=list)  # the recorded answers played instead (segments)

    def to_dict(self) -> dict[str, Any]:
        out = {"mode": "refused" if self.refuse else self.mode, "options": self.options, "why": self.why,
               "approximate": self.approximate}
        if self.script:
            out["recorded"] = {"answers": sum(len(s["answers"]) for s in self.script), "segments": len(self.script),
                               "from": sorted({s["source"] for s in self.script})}
        return out


def plan(original: Original) -> Fault:
    """The fault that makes the probes answer as recorded: the recorded answers themselves, over time, when the
    records hold them (statuses, bodies, rate-limit headers, latencies); else the simulator mode that matches."""
    fault = _mode(original)
    if not fault.refuse:
        fault.script = recorded_script(original)
        if fault.script:
            fault.why = (f"{fault.why}; played back: {sum(len(s['answers']) for s in fault.script)} recorded "
                         f"answer(s) in {len(fault.script)} burst(s), in their original order")
            fault.approximate = None
    return fault


# the probe fields _error_detail (sources/probes.py) writes as "body: key=value, key=value"
_DETAIL = re.compile(r"(message|detail|type|code)=(.*?)(?=, (?:message|detail|type|code)=|$)")
GAP_S = 0.5  # probes further apart than this start a new burst (recorded here, and live in the simulator)


def recorded_script(original: Original) -> list[dict[str, Any]]:
    """The API answers the original's notebooks recorded (probe results aimed at the Mistral API), in bursts
    in time order (offsets from the original's start, for the record): what `MistralSimulator.set_script` plays."""
    found: list[tuple[float, str, dict[str, Any]]] = []
    for notebook, records in original.records.items():
        for probe in _probes(records):
            when = _epoch(probe.get("started_at"))
            if when is not None and probe.get("classification") not in _UNPLAYABLE:
                found.append((when, notebook, _answer(probe)))
    start = _epoch(original.index.get("started_at")) or min((f[0] for f in found), default=0.0)
    found = [(when - start, notebook, answer) for when, notebook, answer in found]
    segments: list[dict[str, Any]] = []
    for offset, notebook, answer in sorted(found, key=lambda f: f[0]):
        last = segments[-1] if segments else None
        if last and last["source"] == notebook and offset - last["last"] <= GAP_S:
            last["answers"].append(answer)
            last["last"] = offset
        else:
            segments.append({"offset_s": round(offset, 3), "last": offset, "source": notebook, "answers": [answer]})
    return [{k: v for k, v in seg.items() if k != "last"} for seg in segments]


_UNPLAYABLE = {"connection_refused", "dns_failure", "network_error", "tls_error"}  # no HTTP answer to play


def _probes(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get("target") == "mistral_api" and "started_at" in value and "classification" in value:
            return [value]
        return [p for v in value.values() for p in _probes(v)]
    if isinstance(value, list):
        return [p for v in value for p in _probes(v)]
    return []


def _answer(probe: dict[str, Any]) -> dict[str, Any]:
    """One recorded probe as an answer: status (None: none came), the body its detail names, headers, latency."""
    status = probe.get("status_code") if isinstance(probe.get("status_code"), int) else None
    detail = str(probe.get("detail") or "")
    body: dict[str, Any] | None = None
    if status is not None and detail.startswith("body: "):
        fields = dict(_DETAIL.findall(detail[len("body: "):]))
        body = {"object": "error", **fields, "param": None} if "message" in fields or "type" in fields else fields
    headers = {str(k): str(v) for k, v in (probe.get("ratelimit") or {}).items()}
    if probe.get("retry_after"):
        headers["retry-after"] = str(probe["retry_after"])
    latency = probe.get("latency_ms")
    return {"status": status, "body": body, "headers": headers,
            "latency_s": round(float(latency) / 1000, 3) if isinstance(latency, int | float) and status else 0.0}


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def _mode(original: Original) -> Fault:
    """The simulator mode that makes triage's probes answer as recorded (see the module docstring)."""
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
