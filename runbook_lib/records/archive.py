"""Reading the incident archive: every record folder under an output root, newest first.

Listing reads only the small `incident.json` (or, for a plain `runbook run`, the `*.run.json`
files), never the executed notebooks, so `runbook list` stays fast over years of incidents. A
folder whose index is corrupt (a crash mid-write by another tool, a bad hand edit) is skipped with
a one-line warning and counted: one bad folder must never hide the others. Only the standard
library is imported here; pandas and matplotlib are imported by `report` and `plot_report` alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .._time import iso_z, parse as parse_time
from ..errors import ParameterError, RunbookError
from .incident import INDEX

SEVERITIES = ("P1", "P2", "P3", "P4")
# The decision branches (decision.py; not imported: it pulls in probes and httpx, ~80 ms).
CLASSES = ("auth", "rate_limit", "provider_error", "network", "our_service", "resolved")
# respond's incident statuses, then a plain run's (execute.py).
STATUSES = ("running", "triaged", "diagnosed", "failed", "succeeded", "timed_out")
RUN_SUFFIX = ".run.json"
_STAMP = re.compile(r"^(\d{8}T\d{6}Z)-(.+)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Scan:
    """Every readable record (newest first) and the folders skipped, with why."""

    incidents: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _BadRecord(Exception):
    """A folder that looks like a record but cannot be read; message = the one-line reason."""


# ---------------------------------------------------------------------------------------------- parsing


def parse_since(value: object, name: str = "since") -> datetime:
    """`--since`: an ISO date (midnight UTC) or date-time; anything else names the option."""
    dt = parse_time(value)
    if dt is None:
        raise ParameterError(name, value, "an ISO date or date-time such as 2026-11-23 or 2026-11-23T10:00Z")
    return dt


def check_severity(value: object, name: str = "severity") -> str:
    """P1..P4, case-insensitive (operators type p2)."""
    if not isinstance(value, str) or value.upper() not in SEVERITIES:
        raise ParameterError(name, value, "one of " + ", ".join(SEVERITIES))
    return value.upper()


def check_choice(value: object, choices: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(name, value, "one of " + ", ".join(choices))
    return value


def check_limit(value: object, name: str = "limit") -> int:
    """A positive whole number (also given as text, from the command line)."""
    try:
        n = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        n = 0
    if n < 1:
        raise ParameterError(name, value, "a whole number >= 1")
    return n


def _iso(dt: datetime | None) -> str | None:
    return iso_z(dt) if dt else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:  # a hand-edited 10**400
        return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end and end >= start else None


def _stamp_time(name: str) -> datetime | None:
    m = _STAMP.match(name)
    try:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if m else None
    except ValueError:  # stamp-shaped but not a date (20261399T...)
        return None


def _stamp_id(name: str) -> str:
    m = _STAMP.match(name)
    return m.group(2) if m else name


# ---------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist; _BadRecord when it cannot be parsed."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRecord(f"{path.name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise _BadRecord(f"{path.name} is nested too deeply to read") from None
    except OSError as exc:
        raise _BadRecord(f"{path.name} cannot be read ({exc.strerror or exc})") from None


def _load(folder: Path) -> tuple[str, dict[str, Any]] | None:
    """("incident", index) or ("run", merged run.json records), None when not a record folder."""
    index = _read_json(folder / INDEX)
    if index is not None:
        if not isinstance(index, dict):
            raise _BadRecord(f"{INDEX} is not a JSON object")
        return "incident", index
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.endswith(RUN_SUFFIX) and not e.name.startswith("."))
    runs = []
    for name in names:
        run = _read_json(folder / name)
        if run is not None and not isinstance(run, dict):
            raise _BadRecord(f"{name} is not a JSON object")
        if run is not None:
            runs.append(run)
    return ("run", _merge_runs(runs)) if runs else None


def _merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain-run records shaped like an incident index, so both kinds read alike."""
    runs.sort(key=lambda r: _text(r.get("started_at")) or "")
    starts = [t for r in runs if (t := parse_time(r.get("started_at")))]
    ends = [t for r in runs if (t := parse_time(r.get("finished_at")))]
    verdict = next((v for r in runs if (v := _dict(r.get("verdict")))), {})
    failed = [s for r in runs if (s := _text(r.get("status"))) and s != "succeeded"]
    statuses = [s for r in runs if (s := _text(r.get("status")))]
    return {
        "id": next((i for r in runs if (i := _text(r.get("incident_id")))), None),
        "started_at": _iso(min(starts)) if starts else None,
        "finished_at": _iso(max(ends)) if ends else None,
        "status": failed[0] if failed else (statuses[0] if statuses else None),
        "severity": _text(verdict.get("severity")), "error_class": _text(verdict.get("branch")),
        "verdict": _text(verdict.get("line")),
        "notebooks": [{"name": _text(r.get("notebook")), "status": _text(r.get("status")),
                       "path": _text(r.get("notebook_path")), "html": _text(r.get("html_path")),
                       "verdict": _text(_dict(r.get("verdict")).get("line")), "error": _text(r.get("error")),
                       "duration_s": _num(r.get("duration_s"))} for r in runs],
        "changes_applied": [],
        "parameters": _dict(runs[0].get("parameters")),
    }


def _summary(folder: Path, kind: str, index: dict[str, Any]) -> dict[str, Any]:
    start = parse_time(index.get("started_at")) or _stamp_time(folder.name)
    end = parse_time(index.get("finished_at"))
    postmortem = _dict(index.get("postmortem"))
    severity = _text(index.get("severity"))
    return {
        "id": _text(index.get("id")) or _stamp_id(folder.name),
        "folder": str(folder), "name": folder.name, "kind": kind,
        "start": _iso(start), "finished": _iso(end),
        "severity": severity.upper() if severity else None,
        "error_class": _text(index.get("error_class")), "status": _text(index.get("status")),
        "duration_s": _seconds(start, end), "impact_s": _num(postmortem.get("duration_s")),
        "changes": len(_list(index.get("changes_applied"))),
        "notebooks": [n for nb in _list(index.get("notebooks")) if (n := _text(_dict(nb).get("name")))],
        "has_evidence": bool(_dict(index.get("evidence"))), "has_postmortem": bool(postmortem),
        "verdict": _text(index.get("verdict")),
        "ttd_s": _num(postmortem.get("time_to_detect_s")), "ttm_s": _num(postmortem.get("time_to_mitigate_s")),
        "ttr_s": _num(postmortem.get("time_to_resolve_s")),
    }


def _warn(folder: str, reason: str) -> None:
    print(f"runbook: skipped {folder}: {reason}", file=sys.stderr)


def scan(root: str | Path, *, warn: bool = True) -> Scan:
    """All records under `root`, newest first; unreadable ones skipped (warned on stderr) and counted.

    A record is a folder holding `incident.json` or `*.run.json`. A `<stamp>-<id>` folder with
    neither (a run still in progress, or one that crashed before writing its result) is counted as
    skipped; other entries (README.md, `.embedded/`, report.png) are not records and are ignored.
    """
    out = Scan()
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise RunbookError(f"cannot read the archive {root}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        folder = Path(entry.path).absolute()
        try:
            loaded = _load(folder)
            if loaded is None:
                if not _STAMP.match(entry.name):
                    continue
                raise _BadRecord(f"no {INDEX} or *{RUN_SUFFIX} (a run in progress, or one that crashed)")
            out.incidents.append(_summary(folder, *loaded))
        except (_BadRecord, OSError) as exc:
            out.skipped.append((str(folder), str(exc)))
            if warn:
                _warn(str(folder), str(exc))
    out.incidents.sort(key=lambda s: (s["start"] or "", s["name"]), reverse=True)
    return out


def select(incidents: list[dict[str, Any]], *, status: str | None = None, severity: str | None = None,
           error_class: str | None = None, since: str | datetime | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:
    """Filter summaries (kept in their order); invalid filters raise ParameterError naming them."""
    status = check_choice(status, STATUSES, "status") if status is not None else None
    severity = check_severity(severity) if severity is not None else None
    error_class = check_choice(error_class, CLASSES, "error_class") if error_class is not None else None
    after = since if isinstance(since, datetime) else (parse_since(since) if since is not None else None)
    if after is not None and after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    limit = check_limit(limit) if limit is not None else None
    rows = [s for s in incidents
            if (status is None or s["status"] == status) and (severity is None or s["severity"] == severity)
            and (error_class is None or s["error_class"] == error_class)
            and (after is None or ((t := parse_time(s["start"])) is not None and t >= after))]
    return rows[:limit] if limit is not None else rows


def list_incidents(root: str | Path, *, status: str | None = None, severity: str | None = None,
                   error_class: str | None = None, since: str | datetime | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """One summary per record folder under `root`, newest first, filtered (see `scan`, `select`)."""
    return select(scan(root).incidents, status=status, severity=severity, error_class=error_class,
                  since=since, limit=limit)


# ---------------------------------------------------------------------------------------------- find, show


def _is_record(folder: Path) -> bool:
    if (folder / INDEX).is_file():
        return True
    return folder.is_dir() and any(p.name.endswith(RUN_SUFFIX) for p in folder.iterdir())


def find(root: str | Path, ref: str | Path) -> Path:
    """The record folder `ref` names: a path, a folder name under `root`, or an id (newest wins)."""
    root = Path(root)
    text = str(ref)
    candidates = [Path(text)] if isinstance(ref, Path) or os.sep in text else [root / text, Path(text)]
    for path in candidates:
        if path.name and path.is_dir() and _is_record(path):
            return path.resolve()
    incidents = scan(root, warn=False).incidents
    same = [s for s in incidents if s["id"] == text]
    # an incident folder (respond's) before a plain run that reused its id, then the newest
    for summary in sorted(same, key=lambda s: s.get("kind") != "incident"):
        return Path(summary["folder"]).resolve()
    known = list(dict.fromkeys(s["id"] for s in incidents))
    shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    raise ParameterError("incident", text, f"an incident id, folder name or path under {root}; "
                                           f"known: {shown or 'none (no records)'}")


def _local(recorded: object, folder: Path, suffix: str | None = None, name: str | None = None) -> tuple[str, bool]:
    """A recorded file path, or its namesake in `folder` when the archive was moved; and whether it exists."""
    options = []
    if isinstance(recorded, str) and recorded:
        options += [Path(recorded), folder / Path(recorded).name]
    elif name and suffix:
        options.append(folder / f"{name}{suffix}")
    for path in options:
        try:
            if path.exists():
                return str(path), True
        except (OSError, ValueError):  # a hand-edited path with a NUL byte, or too long
            continue
    return (recorded if isinstance(recorded, str) else ""), False


def _notebook_meta(path: str) -> dict[str, Any]:
    """`metadata.runbook` stamped by execute.py (read only when the index lacks a notebook's status)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return _dict(_dict(json.load(fh).get("metadata")).get("runbook"))
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}


def _notebooks(index: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    out = []
    for raw in _list(index.get("notebooks")):
        nb = dict(_dict(raw))
        name = _text(nb.get("name")) or "?"
        nb["path"], nb["ipynb_exists"] = _local(nb.get("path"), folder, ".ipynb", name)
        nb["html"], nb["html_exists"] = _local(nb.get("html"), folder, ".html", name)
        if not _text(nb.get("status")) and nb["ipynb_exists"]:
            meta = _notebook_meta(nb["path"])
            nb["status"] = _text(meta.get("status"))
            nb["verdict"] = nb.get("verdict") or _text(_dict(meta.get("verdict")).get("line"))
        out.append(nb)
    listed = {Path(nb["path"]).name for nb in out}
    for path in sorted(folder.glob("*.ipynb")):  # on disk but not (yet) in the index: a run in progress?
        if path.name not in listed:
            meta = _notebook_meta(str(path))
            html, html_exists = _local(None, folder, ".html", path.stem)
            out.append({"name": path.stem, "status": _text(meta.get("status")) or "not in the index",
                        "path": str(path), "ipynb_exists": True, "html": html, "html_exists": html_exists,
                        "verdict": _text(_dict(meta.get("verdict")).get("line")), "error": _text(meta.get("error"))})
    return out


def load(folder: str | Path) -> dict[str, Any]:
    """A record folder's index (or its run.json records shaped alike); RunbookError when unreadable."""
    folder = Path(folder)
    try:
        loaded = _load(folder)
    except (_BadRecord, OSError) as exc:
        raise RunbookError(f"{folder}: {exc}") from None
    if loaded is None:
        raise RunbookError(f"{folder}: no {INDEX} or *{RUN_SUFFIX}: not a record folder")
    kind, index = loaded
    return {**index, "kind": kind}


def show(root: str | Path, ref: str | Path) -> dict[str, Any]:
    """Everything about one incident: its index, file existence per notebook, same-id folders."""
    folder = find(root, ref)
    index = load(folder)
    summary = _summary(folder, index["kind"], index)
    detail = {**index, "id": summary["id"], "folder": str(folder), "name": folder.name,
              "duration_s": summary["duration_s"], "notebooks": _notebooks(index, folder)}
    detail["others"] = [{"folder": s["folder"], "name": s["name"], "start": s["start"], "status": s["status"]}
                        for s in scan(root, warn=False).incidents
                        if s["id"] == summary["id"] and Path(s["folder"]).resolve() != folder]
    return detail


# ---------------------------------------------------------------------------------------------- text


def human_duration(seconds: object) -> str:
    """31s, 1m05s, 2h03m; '-' when unknown."""
    s = _num(seconds)
    if s is None or s < 0:
        return "-"
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _minute(iso: object) -> str:
    dt = parse_time(iso)
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def _second(iso: object) -> str:
    dt = parse_time(iso)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else (_clean(iso) if iso else "-")


def _clean(value: object) -> str:
    """Printable text: an index is data from elsewhere, never terminal control sequences."""
    return "-" if value is None or value == "" else _CONTROL.sub("?", str(value))


def format_table(rows: list[dict[str, Any]]) -> str:
    """`runbook list`'s aligned table (START in UTC, to the minute)."""
    header = ("ID", "START (UTC)", "SEV", "CLASS", "STATUS", "DURATION", "CHANGES", "FOLDER")
    lines = [header] + [(_clean(r["id"]), _minute(r["start"]), _clean(r["severity"]), _clean(r["error_class"]),
                         _clean(r["status"]), human_duration(r["duration_s"]), str(r["changes"]), _clean(r["name"]))
                        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join([c.ljust(w) for c, w in zip(line, widths)] + [line[-1]]).rstrip() for line in lines)


def _field(label: str, value: object) -> str:
    return f"{label + ':':<11}{_clean(value)}"


def _missing_item(item: object) -> str:
    if isinstance(item, dict):
        return f"{item.get('what', '?')}: {item.get('reason', '?')}"
    return str(item)


def format_detail(d: dict[str, Any]) -> str:
    """`runbook show`'s text: the whole incident, readable top to bottom."""
    out = [f"{_clean(d['id'])}  ({'incident' if d.get('kind') == 'incident' else 'plain run'})",
           _field("folder", d["folder"]), _field("started", _second(d.get("started_at"))),
           _field("finished", _second(d.get("finished_at"))
                  + (f"  ({human_duration(d['duration_s'])})" if d.get("duration_s") is not None else "")),
           _field("severity", d.get("severity")), _field("class", d.get("error_class")),
           _field("status", d.get("status")), _field("verdict", d.get("verdict"))]
    if d.get("diagnosis"):
        out.append(_field("diagnosis", d["diagnosis"]))
    out += _alert_lines(d)
    out += _notebook_lines(d["notebooks"]) + _change_lines(_list(d.get("changes_applied")))
    out += _evidence_lines(_dict(d.get("evidence"))) + _postmortem_lines(_dict(d.get("postmortem")))
    if d.get("others"):
        out.append(f"\nother folders for {_clean(d['id'])}:")
        out += [f"  {_clean(o['name'])}  {_minute(o['start'])}  {_clean(o['status'])}" for o in d["others"]]
    return "\n".join(out)


def _alert_lines(d: dict[str, Any]) -> list[str]:
    """Opened by `runbook serve`: which alert, its state, when it resolved, how many notifications."""
    alert = _dict(d.get("alert"))
    if not alert:
        return []
    state = _clean(d.get("alert_state"))
    resolved = _dict(d.get("resolved"))
    if resolved.get("at"):
        state += f" at {_second(resolved['at'])}"
    notes = [_dict(a) for a in _list(d.get("alerts"))]
    joined = sorted({_clean(a.get("name")) for a in notes
                     if a.get("fingerprint") and a.get("fingerprint") != alert.get("fingerprint")})
    lines = [_field("alert", f"{_clean(alert.get('name'))} ({_clean(alert.get('fingerprint'))}), {state}; "
                             f"{len(notes)} notification(s)")]
    if joined:  # alerts of the same fault that joined this incident (serve's correlation)
        lines.append(_field("joined by", ", ".join(joined)))
    return lines


def _notebook_lines(notebooks: list[dict[str, Any]]) -> list[str]:
    out = [f"\nnotebooks ({len(notebooks)}):"] if notebooks else ["\nnotebooks: none recorded"]
    for nb in notebooks:
        took = f" in {human_duration(nb.get('duration_s'))}" if _num(nb.get("duration_s")) is not None else ""
        out.append(f"  {_clean(nb.get('name'))}: {_clean(nb.get('status'))}{took}")
        if nb.get("verdict"):
            out.append(f"    verdict: {_clean(nb['verdict'])}")
        if nb.get("error"):
            out.append(f"    error:   {_clean(nb['error'])}")
        for label, key in (("ipynb", "path"), ("html", "html")):
            exists = nb.get(f"{key if key == 'html' else 'ipynb'}_exists")
            out.append(f"    {label + ':':<8} {_clean(nb.get(key))}{'' if exists else '  (missing)'}")
    return out


def _change_lines(changes: list[Any]) -> list[str]:
    if not changes:
        return ["\nchanges applied: none"]
    out = [f"\nchanges applied ({len(changes)}):"]
    for raw in changes:
        c = _dict(raw)
        verified = {True: "verified", False: "NOT verified"}.get(c.get("verified"), "verification unknown")
        out.append(f"  {_second(c.get('at'))} by {_clean(c.get('who'))}: {_clean(c.get('action'))} "
                   f"on {_clean(c.get('target'))} ({verified}) [{_clean(c.get('record'))}]")
        out.append(f"    undo: {_clean(c.get('undo'))}")
    return out


def _evidence_lines(ev: dict[str, Any]) -> list[str]:
    if not ev:
        return ["\nevidence: not collected"]
    window = _dict(ev.get("window"))
    out = ["\nevidence:", f"  bundle:    {_clean(ev.get('bundle'))}", f"  archive:   {_clean(ev.get('archive'))}",
           f"  files:     {_clean(ev.get('files'))}, collected {_second(ev.get('collected_at'))}"]
    if window:
        out.append(f"  window:    {_second(window.get('start'))} .. {_second(window.get('end'))} "
                   f"({human_duration(window.get('seconds'))})")
    missing = _list(ev.get("missing"))
    out.append("  missing:   " + ("; ".join(_clean(_missing_item(m)) for m in missing) if missing else "none"))
    return out


def _postmortem_lines(pm: dict[str, Any]) -> list[str]:
    if not pm:
        return ["\npostmortem: not written"]
    models = ", ".join(_clean(m) for m in _list(pm.get("affected_models"))) or "-"
    return ["\npostmortem:", f"  markdown:  {_clean(pm.get('markdown'))}",
            f"  impact:    {_second(pm.get('impact_start'))} .. {_second(pm.get('impact_end'))} "
            f"({human_duration(pm.get('duration_s'))}), peak {_second(pm.get('peak'))}",
            f"  time to detect {human_duration(pm.get('time_to_detect_s'))}, "
            f"to mitigate {human_duration(pm.get('time_to_mitigate_s'))}, "
            f"to resolve {human_duration(pm.get('time_to_resolve_s'))}",
            f"  failed requests: {_clean(pm.get('failed_requests'))} "
            f"(source: {_clean(pm.get('failed_requests_source'))})",
            f"  affected models: {models}"]


# ---------------------------------------------------------------------------------------------- report


def report(root: str | Path) -> dict[str, Any]:
    """Counts per class x severity, and per day the median times to detect/mitigate/resolve.

    Medians come from postmortem sections only; incidents without one are counted per day but left
    out of the medians (`without_postmortem` says how many), never counted as zero.
    """
    import pandas as pd

    found = scan(root)
    frame = pd.DataFrame(found.incidents, columns=["id", "start", "severity", "error_class", "has_postmortem",
                                                   "ttd_s", "ttm_s", "ttr_s"])
    frame["severity"] = frame["severity"].fillna("unknown")
    frame["error_class"] = frame["error_class"].fillna("unknown")
    counts = pd.crosstab(frame["error_class"], frame["severity"]) if len(frame) else pd.DataFrame()
    if len(counts):
        order = [s for s in SEVERITIES if s in counts.columns] + sorted(set(counts.columns) - set(SEVERITIES))
        counts = counts[order]
        counts.index.name, counts.columns.name = "class", "severity"
    frame["day"] = pd.to_datetime(frame["start"], utc=True, errors="coerce").dt.strftime("%Y-%m-%d")
    dated = frame.dropna(subset=["day"])
    timing = pd.DataFrame(columns=["incidents", "postmortems", "median_ttd_s", "median_ttm_s", "median_ttr_s"])
    if len(dated):
        with_pm = dated[dated["has_postmortem"]]
        timing = pd.DataFrame({"incidents": dated.groupby("day").size(),
                               "postmortems": with_pm.groupby("day").size()}).fillna(0).astype(int)
        for col in ("ttd_s", "ttm_s", "ttr_s"):
            timing[f"median_{col}"] = pd.to_numeric(with_pm[col], errors="coerce").groupby(with_pm["day"]).median()
        timing.index.name = "day"
    return {"counts": counts, "timing": timing, "incidents": len(frame),
            "without_postmortem": int((~frame["has_postmortem"].astype(bool)).sum()),
            "undated": int(len(frame) - len(dated)), "skipped": len(found.skipped)}


def plot_report(rep: dict[str, Any], path: str | Path) -> Path:
    """A PNG: incidents per class stacked by severity, and the median times per day (minutes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no global backend switch inside a notebook

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    counts, timing = rep["counts"], rep["timing"]
    if len(counts):
        counts.plot(kind="bar", stacked=True, ax=left, rot=30)
        left.legend(title="severity", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    else:
        left.text(0.5, 0.5, "no incidents", ha="center", va="center", transform=left.transAxes)
    left.set(title="Incidents per class and severity", xlabel="class", ylabel="incidents")
    plotted = False
    for col, label in (("median_ttd_s", "time to detect"), ("median_ttm_s", "time to mitigate"),
                       ("median_ttr_s", "time to resolve")):
        series = timing[col].dropna() if col in timing else []
        if len(series):
            days = [datetime.strptime(d, "%Y-%m-%d") for d in series.index]
            right.plot(days, [v / 60 for v in series], marker="o", markersize=3, label=label)
            plotted = True
    if plotted:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        right.xaxis.set_major_locator(locator)
        right.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        right.legend()
    else:
        right.text(0.5, 0.5, "no postmortem timings", ha="center", va="center", transform=right.transAxes)
    right.set(title="Median times per day (postmortems only)", xlabel="day (UTC)", ylabel="minutes")
    right.annotate(f"{rep.get('without_postmortem', 0)} incident(s) without a postmortem: not in the medians",
                   (0, -0.2), xycoords="axes fraction", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def report_json(rep: dict[str, Any]) -> dict[str, Any]:
    """The report as plain JSON values (NaN medians become null)."""
    def rows(df: Any) -> dict[str, Any]:
        return {str(k): {c: (None if v != v else v) for c, v in row.items()} for k, row in
                df.astype(object).to_dict(orient="index").items()}

    return {**{k: v for k, v in rep.items() if k not in ("counts", "timing")},
            "counts": rows(rep["counts"]), "timing": rows(rep["timing"])}


# ---------------------------------------------------------------------------------------------- verify


@dataclass
class Verification:
    """One bundle (folder or archive) re-hashed against its manifest."""

    target: str
    files: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_folder(folder: Path, label: str) -> Verification:
    from . import bundle

    try:
        manifest = json.loads((folder / bundle.MANIFEST).read_text("utf-8"))
        listed = [PurePosixPath(e["path"]) for e in manifest["files"]]
    except FileNotFoundError:
        return Verification(label, 0, [f"{bundle.MANIFEST}: missing"])
    except (ValueError, KeyError, TypeError) as exc:
        return Verification(label, 0, [f"{bundle.MANIFEST}: unreadable ({type(exc).__name__}: {exc})"])
    outside = [f"{p}: listed path leaves the bundle" for p in listed if p.is_absolute() or ".." in p.parts]
    if outside:  # a tampered manifest must not make us read (hash) files elsewhere
        return Verification(label, len(listed), outside)
    try:
        return Verification(label, len(listed), bundle.verify(folder))  # changed, missing and added files
    except (ValueError, KeyError, TypeError) as exc:
        return Verification(label, len(listed), [f"{bundle.MANIFEST}: unreadable ({type(exc).__name__}: {exc})"])


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"{member.name}: path outside the archive's folder"
    if not (member.isfile() or member.isdir()):
        return f"{member.name}: a link or special file (bundles hold regular files only)"
    return None


def _verify_archive(archive: Path) -> Verification:
    """Extract into a temporary folder (rejecting unsafe members) and verify what came out."""
    try:
        with tarfile.open(archive, "r:gz") as tar, tempfile.TemporaryDirectory(prefix="runbook-verify-") as tmp:
            members = tar.getmembers()
            unsafe = [p for m in members if (p := _unsafe_member(m))]
            if unsafe:
                return Verification(str(archive), 0, unsafe)
            tar.extractall(tmp, filter="data")
            tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(tops) != 1 or [p for p in Path(tmp).iterdir() if not p.is_dir()]:
                return Verification(str(archive), 0, ["expected exactly one bundle folder at the archive's top"])
            result = _verify_folder(tops[0], str(archive))
            result.problems = [f"{tops[0].name}/{p}" for p in result.problems]
            return result
    except (tarfile.TarError, OSError, EOFError) as exc:
        return Verification(str(archive), 0, [f"not a readable .tar.gz ({type(exc).__name__}: {exc})"])


def verify_bundle(path: str | Path) -> Verification:
    """An evidence bundle folder or its `.tar.gz`, re-hashed against manifest.json."""
    path = Path(path)
    return _verify_archive(path) if path.is_file() else _verify_folder(path, str(path))


def _evidence_paths(folder: Path, index: dict[str, Any]) -> list[Path]:
    ev = _dict(index.get("evidence"))
    out = []
    for key in ("bundle", "archive"):
        recorded = _text(ev.get(key))
        if recorded:
            local, exists = _local(recorded, folder)
            out.append(Path(local) if exists else Path(recorded))
    return out


def verify(root: str | Path, ref: str | Path) -> list[Verification]:
    """What `runbook verify REF` checks: a bundle folder, its .tar.gz, or an incident's evidence (both)."""
    path = Path(ref)
    if path.is_file() or (path.is_dir() and (path / "manifest.json").is_file()):
        return [verify_bundle(path)]
    if path.is_dir() and not _is_record(path):
        raise ParameterError("bundle", str(ref), "an evidence bundle folder (with manifest.json), its .tar.gz, "
                                                 "or an incident folder; this folder is none of these")
    try:
        folder = find(root, ref)
    except ParameterError:
        raise ParameterError("bundle", str(ref), "an evidence bundle folder, its .tar.gz, or an incident (id, "
                                                 f"folder name or path under {root}) with collected evidence; "
                                                 "no such file or incident") from None
    targets = _evidence_paths(folder, load(folder))
    if not targets:
        raise ParameterError("bundle", str(ref), f"an incident with collected evidence; {folder.name} has none "
                                                 "in its index (run the evidence runbook first)")
    results = [verify_bundle(t) if t.exists() else Verification(str(t), 0, ["missing"]) for t in targets]
    if len(targets) == 2 and all(t.exists() for t in targets) and not _same_manifest(*targets):
        results[1].problems.append(f"manifest.json differs from {targets[0]}/manifest.json "
                                   "(one of the two was rewritten after collection)")
    return results


def _same_manifest(folder: Path, archive: Path) -> bool:
    """Folder and archive are written from one manifest; different bytes mean one was rewritten."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next(m for m in tar.getmembers() if m.isfile() and len(PurePosixPath(m.name).parts) == 2
                          and PurePosixPath(m.name).name == "manifest.json")
            inside = tar.extractfile(member).read()  # type: ignore[union-attr]
        return inside == (folder / "manifest.json").read_bytes()
    except (StopIteration, tarfile.TarError, OSError, EOFError):
        return False
