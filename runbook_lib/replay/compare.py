"""`runbook replay --compare`: the facts that matter, original vs replay, side by side.

Why these facts: they are what a change to the runbooks' logic can silently alter (the severity,
the class the incident was filed under, which diagnosis it was routed to, what the verdicts say).
Times, latencies, counts and ids differ on every run and are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record import read_records
from ..records.incident import read_index

TOLERANCE = ("tolerance: each fact is compared exactly (text, case included; a verdict's class is its line up to "
             "the first ':'); a fact the original did not record is shown and not compared. Not compared: times, "
             "latencies, counts, correlation and incident ids (they differ on every run).")


@dataclass
class Row:
    fact: str
    original: str | None
    replay: str | None

    @property
    def checked(self) -> bool:
        return self.original is not None

    @property
    def same(self) -> bool:
        return not self.checked or self.original == self.replay


def _verdict_class(line: object) -> str | None:
    return str(line).split(":", 1)[0].strip() if line else None


def facts(folder: Path, index: dict[str, Any] | None = None,
          records: dict[str, dict[str, Any]] | None = None) -> dict[str, str | None]:
    """The compared facts of one incident, from its index and records (given, or read from `folder`)."""
    index = index if index is not None else read_index(folder) or {}
    if records is None:
        records = {p.stem: read_records(p) for p in folder.glob("*.ipynb")}
    verdict = (records.get("triage") or {}).get("verdict")
    verdict = verdict if isinstance(verdict, dict) else {}
    diag = next((n for n in index.get("notebooks") or [] if isinstance(n, dict)
                 and str(n.get("name", "")).startswith("diagnose_")), None)
    history = [str(h.get("to")) for h in index.get("severity_history") or [] if isinstance(h, dict)]
    return {
        "severity": index.get("severity") or verdict.get("severity"),
        "severity history": " -> ".join(history) or None,
        "error class": index.get("error_class") or verdict.get("branch"),
        "routed notebook": verdict.get("notebook") or (diag or {}).get("name"),
        "API verdict (triage's probes)": verdict.get("api_verdict"),
        "triage verdict class": verdict.get("label"),
        "our service (triage)": verdict.get("service_status"),
        "diagnosis verdict class": _verdict_class((diag or {}).get("verdict") or index.get("diagnosis")),
    }


def compare(original: dict[str, str | None], replay: dict[str, str | None]) -> list[Row]:
    return [Row(name, original.get(name), replay.get(name)) for name in original]


def render(rows: list[Row], original_label: str, replay_label: str) -> str:
    """The side-by-side table, the tolerance, and the result line."""
    width = max(len(r.fact) for r in rows) + 2
    col = max(max(len(str(r.original)), len(str(r.replay)), 8) for r in rows) + 2
    lines = [f"original: {original_label}", f"replay:   {replay_label}",
             f"{'fact':<{width}}{'original':<{col}}{'replay':<{col}}"]
    for r in rows:
        mark = "same" if r.checked and r.same else "DIFFERS" if r.checked else "not checked (not recorded)"
        lines.append(f"{r.fact:<{width}}{str(r.original if r.checked else '-'):<{col}}{str(r.replay):<{col}}{mark}")
    differ = [r.fact for r in rows if not r.same]
    lines.append(TOLERANCE)
    lines.append(f"result: DIFFERENT: {len(differ)} fact(s) differ: {', '.join(differ)}" if differ else
                 f"result: same ({sum(r.checked for r in rows)} fact(s) compared, 0 differ)")
    return "\n".join(lines)
