"""`runbook replay --compare`: the facts that matter, original vs replay, side by side.

Why these facts: they are what a change to the runbooks' logic can silently alter (the severity,
the class the incident was filed under, which diagnosis it was routed to, what the verdicts say).
Times, latencies, counts and ids differ on every run and are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._time import iso_z
from ...record import read_records
from ...records.incident import read_index

TOLERANCE = ("tolerance: each fact is compared exactly (text, case included; a verdict's class is its line up to "
             "the first ':'), except the postmortem's numbers, each within the tolerance shown beside it; a fact "
             "the original did not record is shown and not compared. The replay's impact times are read on the "
             "original's clock (the replay's Prometheus holds the original's series shifted by replay.prometheus."
             "shift_s, taken off again here), and its TTD has the replay's own start delay taken off (its triage "
             "starts a few seconds after the shifted original's). Not compared: latencies, correlation and "
             "incident ids, TTM when the original applied a change (a replay never applies one).")
# How far the postmortem's numbers may move (why: the counters are the same samples, evaluated at the same
# step; a boundary sample can move a step's calls into its neighbour, and times are read to the step).
COUNT_TOLERANCE = (2, 0.02)  # calls: at most 2, or 2 %, whichever is larger


@dataclass
class Row:
    fact: str
    original: Any
    replay: Any
    tolerance: float | None = None   # numbers: the largest difference still "same"
    note: str | None = None          # why not compared, when it is not

    @property
    def checked(self) -> bool:
        return self.original is not None and self.note is None

    @property
    def same(self) -> bool:
        if not self.checked:
            return True
        if self.tolerance is not None and isinstance(self.original, int | float) \
                and isinstance(self.replay, int | float):
            return abs(self.original - self.replay) <= self.tolerance + 1e-9
        return self.original == self.replay

    def shown(self, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and self.fact.startswith("impact ") and self.fact.endswith(("start", "end")):
            return iso_z(value)
        return str(value)


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


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        from datetime import datetime

        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def root_cause(folder: Path) -> str | None:
    """The postmortem's 'Root cause:' sentence (its summary line), None without a postmortem.md."""
    try:
        text = (folder / "postmortem.md").read_text("utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if " Root cause: " in line:
            return line.split(" Root cause: ", 1)[1].strip()
    return None


def postmortem_facts(folder: Path, index: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The postmortem's impact window and counts, TTD/TTM/TTR and cause (empty: no postmortem ran)."""
    pm = records.get("postmortem") or {}
    if not pm and (folder / "postmortem.ipynb").is_file():  # incident_data leaves the postmortem's records out
        pm = read_records(folder / "postmortem.ipynb")
    window = pm.get("impact_window") if isinstance(pm.get("impact_window"), dict) else {}
    timings = pm.get("timings") if isinstance(pm.get("timings"), dict) else {}
    if not window and not timings:
        return {}
    by_code = window.get("by_code")
    return {"step_s": window.get("step_s"), "found": window.get("found"),
            "impact start": _epoch(window.get("start")), "impact end": _epoch(window.get("end")),
            "impact duration (s)": window.get("duration_s"), "failed calls": window.get("failed_requests"),
            "bad calls": window.get("bad_requests"), "calls in the impact": window.get("requests"),
            "failed by code": ", ".join(f"{k}: {v}" for k, v in sorted(by_code.items())) if isinstance(
                by_code, dict) else None,
            "affected models": ", ".join(window.get("affected_models") or []) or None,
            "TTD (s)": timings.get("time_to_detect_s"), "detected by": timings.get("detected_by"),
            "TTM (s)": timings.get("time_to_mitigate_s"), "TTR (s)": timings.get("time_to_resolve_s"),
            "cause": root_cause(folder), "started_at": _epoch(index.get("started_at"))}


def compare(original: dict[str, str | None], replay: dict[str, str | None],
            original_pm: dict[str, Any] | None = None, replay_pm: dict[str, Any] | None = None,
            shift_s: float = 0.0) -> list[Row]:
    """The rows: the verdict facts exactly, then (when the original has a postmortem) its numbers within tolerance."""
    rows = [Row(name, original.get(name), replay.get(name)) for name in original]
    ours, theirs = original_pm or {}, dict(replay_pm or {})
    if not ours:
        return rows
    step = float(ours.get("step_s") or theirs.get("step_s") or 60)
    for name in ("impact start", "impact end"):  # the replay's, back on the original's clock
        if isinstance(theirs.get(name), float):
            theirs[name] -= shift_s
    drift = 0.0  # how much later than the shifted original the replay's triage started
    if isinstance(theirs.get("started_at"), float) and isinstance(ours.get("started_at"), float):
        drift = theirs["started_at"] - (ours["started_at"] + shift_s)
    if theirs.get("detected by") == "triage" and isinstance(theirs.get("TTD (s)"), int | float):
        theirs["TTD (s)"] = round(theirs["TTD (s)"] - drift, 3)
    for name in ("impact start", "impact end", "impact duration (s)", "TTD (s)", "TTR (s)"):
        rows.append(Row(name, ours.get(name), theirs.get(name), tolerance=step + 1))
    for name in ("failed calls", "bad calls", "calls in the impact"):
        base = ours.get(name)
        tol = max(COUNT_TOLERANCE[0], COUNT_TOLERANCE[1] * base) if isinstance(base, int | float) else None
        rows.append(Row(name, base, theirs.get(name), tolerance=tol))
    rows += [Row(name, ours.get(name), theirs.get(name)) for name in ("failed by code", "affected models",
                                                                       "detected by")]
    ttm = ours.get("TTM (s)")
    rows.append(Row("TTM (s)", ttm, theirs.get("TTM (s)"), tolerance=step + 1,
                    note="the original applied a change; a replay never applies one" if ttm is not None else
                    "no change applied, so none to time"))
    rows.append(Row("cause", ours.get("cause"), theirs.get("cause")))
    return rows


def _cut(text: str, col: int) -> str:
    return text if len(text) <= col - 2 else text[:col - 5] + "..."


def render(rows: list[Row], original_label: str, replay_label: str) -> str:
    """The side-by-side table, the tolerance, and the result line."""
    width = max(len(r.fact) for r in rows) + 2
    col = min(40, max(max(len(r.shown(r.original)), len(r.shown(r.replay)), 8) for r in rows) + 2)
    lines = [f"original: {original_label}", f"replay:   {replay_label}",
             f"{'fact':<{width}}{'original':<{col}}{'replay':<{col}}"]
    for r in rows:
        tol = f" (within {r.tolerance:g})" if r.tolerance is not None else ""
        mark = (("same" if r.same else "DIFFERS") + tol if r.checked else
                f"not checked ({r.note})" if r.note else "not checked (not recorded)")
        lines.append(f"{r.fact:<{width}}{_cut(r.shown(r.original), col):<{col}}{_cut(r.shown(r.replay), col):<{col}}{mark}")
    for r in rows:  # a differing value cut in the table is printed whole
        if not r.same and max(len(r.shown(r.original)), len(r.shown(r.replay))) > col - 2:
            lines += [f"{r.fact}, original: {r.shown(r.original)}", f"{r.fact}, replay:   {r.shown(r.replay)}"]
    differ = [r.fact for r in rows if not r.same]
    lines.append(TOLERANCE)
    lines.append(f"result: DIFFERENT: {len(differ)} fact(s) differ: {', '.join(differ)}" if differ else
                 f"result: same ({sum(r.checked for r in rows)} fact(s) compared, 0 differ)")
    return "\n".join(lines)
