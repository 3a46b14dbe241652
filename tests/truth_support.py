"""Ground truth for the truth matrix: what really happened, from the simulators' own logs.

The stack knows when each fault began and ended (`EmbeddedStack.fault_spans`) and what every call
of our service got (`ServiceSimulator.call_history`: end time, latency, code). A finding of the
runbooks is checked against these, never against what the code happened to print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What each fault must be classified as (triage's branch, written to incident.json as error_class).
# `flaky` fails half with 503 and half with 429 (sim/mistral.py), so either class is a right reading.
EXPECTED_CLASS = {"auth_failure": {"auth"}, "rate_limited": {"rate_limit"}, "capacity_exceeded": {"rate_limit"},
                  "server_error": {"provider_error"}, "flaky": {"provider_error", "rate_limit"},
                  "hang": {"network"}, "slow": {"network"}, "refused": {"network"}}
# The status codes the fault's failed calls may carry ("000": no answer).
EXPECTED_CODES = {"auth_failure": {"401"}, "rate_limited": {"429"}, "capacity_exceeded": {"429"},
                  "server_error": {"503"}, "flaky": {"503", "429"}, "hang": {"000"},
                  "slow": {"000"}, "refused": {"000"}}


@dataclass
class Truth:
    mode: str
    fault_start: float
    fault_end: float
    bad_calls: int          # calls of this fault that failed, timed out or were over the latency bound
    failed_calls: int
    first_bad_start: float | None
    last_bad_end: float | None
    codes: set[str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "codes": sorted(self.codes)}


def is_bad(call: Any, latency_bound_s: float) -> bool:
    """The impact model's definition, applied to one real call."""
    return not call.code.startswith("2") or call.latency_ms / 1000 > latency_bound_s


def truth_for(mode: str, span: dict[str, Any], calls: list[Any], latency_bound_s: float) -> Truth:
    """The calls of one fault: those in flight at some point during [start, end] (end: when it was cleared)."""
    start, end = span["start"], span["end"]
    mine = [c for c in calls if c.ts - c.latency_ms / 1000 <= end and c.ts >= start]
    bad = [c for c in mine if is_bad(c, latency_bound_s)]
    return Truth(mode, start, end, len(bad), sum(1 for c in mine if not c.code.startswith("2")),
                 min((c.ts - c.latency_ms / 1000 for c in bad), default=None),
                 max((c.ts for c in bad), default=None), {c.code for c in bad if not c.code.startswith("2")})


def level_at(history: list[dict[str, Any]], when: str) -> str | None:
    """The incident's severity at ISO time `when`, from its severity history (None before the first)."""
    level = None
    for event in history:
        if event["at"] <= when:
            level = event["to"]
    return level
