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
    calls: int = 0          # calls of this fault (in flight at some point during it)
    ended: int = 0          # of these, the calls that ended during the fault (the answers users got in it)
    ended_bad: int = 0

    def level(self) -> str | None:
        """The seed table's level for what users really got; None near a boundary (either is right).

        All calls failing is a complete outage (P1), and so is a hang (no call that ended during the fault
        was answered in time, some timed out; calls in flight at its edges may have been); every call answered but slow is high latency (P2), never an outage; otherwise the
        share of bad calls: >= 50% P2, fewer P3 (within 8 points of 50%: either).
        """
        if not self.calls:
            return None
        if self.failed_calls / self.calls >= 0.99 or (self.ended and self.ended_bad == self.ended
                                                      and self.failed_calls):
            return "P1"
        share = self.bad_calls / self.calls
        if self.failed_calls == 0 and share >= 0.5:
            return "P2"
        if abs(share - 0.5) < 0.08:
            return None
        return "P2" if share >= 0.5 else "P3"

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
    ended = [c for c in mine if c.ts <= end]
    return Truth(mode, start, end, len(bad), sum(1 for c in mine if not c.code.startswith("2")),
                 min((c.ts - c.latency_ms / 1000 for c in bad), default=None),
                 max((c.ts for c in bad), default=None), {c.code for c in bad if not c.code.startswith("2")},
                 len(mine), len(ended), sum(1 for c in ended if is_bad(c, latency_bound_s)))


def level_at(history: list[dict[str, Any]], when: str) -> str | None:
    """The incident's severity at ISO time `when`, from its severity history (None before the first)."""
    level = None
    for event in history:
        if event["at"] <= when:
            level = event["to"]
    return level


def format_truth(folder: str) -> list[str]:
    """The truth matrix rows written by tests/test_truth_matrix.py (kind "truth"), as a table."""
    import json
    from pathlib import Path

    path = Path(folder) / "matrix-totals.jsonl"
    rows = [r for r in (json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip())
            if r.get("kind") == "truth"] if path.exists() else []
    if not rows:
        return []
    out = [f"{'fault':<18}{'class':<15}{'sev':<5}{'bad calls found/truth':<23}{'window found (s)':<18}"
           f"{'window truth (s)':<18}{'TTD s':<7}codes"]
    for r in rows:
        found = r.get("found_window") or ["-", "-"]
        truth = r.get("truth_window") or ["-", "-"]
        out.append(f"{r['mode']:<18}{str(r.get('class')):<15}{str(r.get('severity')):<5}"
                   f"{str(r.get('found_bad')) + ' / ' + str(r.get('truth_bad')):<23}"
                   f"{str(found[0]) + '..' + str(found[1]):<18}{str(truth[0]) + '..' + str(truth[1]):<18}"
                   f"{str(r.get('ttd_s')):<7}{r.get('codes')}")
    out.append("windows in seconds from the fault's start; truth: first bad call's start .. last bad call's end")
    return out
