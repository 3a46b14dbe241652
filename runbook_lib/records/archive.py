"""Reading the incident archive: every record folder under an output root, newest first.

Listing reads only the small `incident.json` (or, for a plain `runbook run`, the `*.run.json`
files), never the executed notebooks, so `runbook list` stays fast over years of incidents. A
folder whose index is corrupt (a crash mid-write by another tool, a bad hand edit) is skipped with
a one-line warning and counted: one bad folder must never hide the others. Only the standard
library is imported here. The rest of the archive lives beside it: `format` (the text of `runbook
list` and `show`), `report` (pandas and matplotlib, imported inside its functions) and `verify`
(evidence bundles against their manifests).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._time import iso_z
from .._time import parse as parse_time
from ..errors import ParameterError, RunbookError
from ..paths import is_url
from ._values import as_dict, as_list, as_number, as_text
from .incident import INDEX

SEVERITIES = ("P1", "P2", "P3", "P4")
# The decision branches (decision.py; not imported: it pulls in probes and httpx, ~80 ms).
CLASSES = ("auth", "rate_limit", "provider_error", "network", "our_service", "resolved")
# respond's incident statuses, then a plain run's (execute.py).
# an incident's lifecycle (running -> triaged/diagnosed -> mitigated/resolved) and a plain run's outcome
STATUSES = ("queued", "running", "triaged", "diagnosed", "mitigated", "resolved", "interactive", "failed",
            "succeeded", "timed_out")
RUN_SUFFIX = ".run.json"
STAMP = re.compile(r"^(\d{8}T\d{6}Z)-(.+)$")


@dataclass
class Scan:
    """Every readable record (newest first) and the folders skipped, with why."""

    incidents: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class BadRecord(Exception):
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
    """One of `choices`, exactly as written (statuses and classes are lower-case words)."""
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


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end and end >= start else None


def _stamp_time(name: str) -> datetime | None:
    m = STAMP.match(name)
    try:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if m else None
    except ValueError:  # stamp-shaped but not a date (20261399T...)
        return None


def _stamp_id(name: str) -> str:
    m = STAMP.match(name)
    return m.group(2) if m else name


# ---------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist; BadRecord when it cannot be parsed."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRecord(f"{path.name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRecord(f"{path.name} is nested too deeply to read") from None
    except OSError as exc:
        raise BadRecord(f"{path.name} cannot be read ({exc.strerror or exc})") from None


def _load(folder: Path) -> tuple[str, dict[str, Any]] | None:
    """("incident", index) or ("run", merged run.json records), None when not a record folder."""
    index = _read_json(folder / INDEX)
    if index is not None:
        if not isinstance(index, dict):
            raise BadRecord(f"{INDEX} is not a JSON object")
        return "incident", index
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.endswith(RUN_SUFFIX) and not e.name.startswith("."))
    runs = []
    for name in names:
        run = _read_json(folder / name)
        if run is not None and not isinstance(run, dict):
            raise BadRecord(f"{name} is not a JSON object")
        if run is not None:
            runs.append(run)
    return ("run", merge_runs(runs)) if runs else None


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain-run records shaped like an incident index, so both kinds read alike."""
    runs.sort(key=lambda r: as_text(r.get("started_at")) or "")
    starts = [t for r in runs if (t := parse_time(r.get("started_at")))]
    ends = [t for r in runs if (t := parse_time(r.get("finished_at")))]
    verdict = next((v for r in runs if (v := as_dict(r.get("verdict")))), {})
    failed = [s for r in runs if (s := as_text(r.get("status"))) and s != "succeeded"]
    statuses = [s for r in runs if (s := as_text(r.get("status")))]
    return {
        "id": next((i for r in runs if (i := as_text(r.get("incident_id")))), None),
        "started_at": _iso(min(starts)) if starts else None,
        "finished_at": _iso(max(ends)) if ends else None,
        "status": failed[0] if failed else (statuses[0] if statuses else None),
        "severity": as_text(verdict.get("severity")), "error_class": as_text(verdict.get("branch")),
        "verdict": as_text(verdict.get("line")),
        "notebooks": [{"name": as_text(r.get("notebook")), "status": as_text(r.get("status")),
                       "path": as_text(r.get("notebook_path")), "html": as_text(r.get("html_path")),
                       "verdict": as_text(as_dict(r.get("verdict")).get("line")), "error": as_text(r.get("error")),
                       "duration_s": as_number(r.get("duration_s"))} for r in runs],
        "changes_applied": [],
        "parameters": as_dict(runs[0].get("parameters")),
    }


def summarize(folder: Path, kind: str, index: dict[str, Any]) -> dict[str, Any]:
    start = parse_time(index.get("started_at")) or _stamp_time(folder.name)
    end = parse_time(index.get("finished_at"))
    postmortem = as_dict(index.get("postmortem"))
    severity = as_text(index.get("severity"))
    return {
        "id": as_text(index.get("id")) or _stamp_id(folder.name),
        "folder": str(folder), "name": folder.name, "kind": kind,
        "start": _iso(start), "finished": _iso(end),
        "severity": severity.upper() if severity else None,
        "error_class": as_text(index.get("error_class")), "status": as_text(index.get("status")),
        "duration_s": _seconds(start, end), "impact_s": as_number(postmortem.get("duration_s")),
        "changes": len(as_list(index.get("changes_applied"))),
        "notebooks": [n for nb in as_list(index.get("notebooks")) if (n := as_text(as_dict(nb).get("name")))],
        "has_evidence": bool(as_dict(index.get("evidence"))), "has_postmortem": bool(postmortem),
        "verdict": as_text(index.get("verdict")),
        "ttd_s": as_number(postmortem.get("time_to_detect_s")),
        "ttm_s": as_number(postmortem.get("time_to_mitigate_s")),
        "ttr_s": as_number(postmortem.get("time_to_resolve_s")),
    }


def warn_skipped(folder: str, reason: str) -> None:
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
                if not STAMP.match(entry.name):
                    continue
                raise BadRecord(f"no {INDEX} or *{RUN_SUFFIX} (a run in progress, or one that crashed)")
            out.incidents.append(summarize(folder, *loaded))
        except (BadRecord, OSError) as exc:
            out.skipped.append((str(folder), str(exc)))
            if warn:
                warn_skipped(str(folder), str(exc))
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


def is_record(folder: Path) -> bool:
    """A folder holding an incident index or a plain run's `*.run.json` (what find and verify accept)."""
    if (folder / INDEX).is_file():
        return True
    return folder.is_dir() and any(p.name.endswith(RUN_SUFFIX) for p in folder.iterdir())


def find(root: str | Path, ref: str | Path) -> Path:
    """The record folder `ref` names: a path, a folder name under `root`, or an id (newest wins)."""
    if is_url(root):  # evidence, postmortem and open write into the folder: it must be local
        raise ParameterError("--output-dir", str(root), "a local folder for this command (it writes into the "
                                                        "incident's folder); list, show, report and verify read "
                                                        "object storage")
    root = Path(root)
    text = str(ref)
    candidates = [Path(text)] if isinstance(ref, Path) or os.sep in text else [root / text, Path(text)]
    for path in candidates:
        if path.name and path.is_dir() and is_record(path):
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


def local_path(recorded: object, folder: Path, suffix: str | None = None,
               name: str | None = None) -> tuple[str, bool]:
    """A recorded file path resolved inside `folder`, and whether it exists.

    Paths are relative to the incident folder; an absolute one (older records) is looked up by its
    name inside `folder`, never at its old location: a copied or moved archive is checked as given.
    """
    options = []
    if isinstance(recorded, str) and recorded:
        rec = Path(recorded)
        options += [folder / Path(recorded).name] if rec.is_absolute() else [folder / rec, folder / rec.name]
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
            return as_dict(as_dict(json.load(fh).get("metadata")).get("runbook"))
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}


def _notebooks(index: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    out = []
    for raw in as_list(index.get("notebooks")):
        nb = dict(as_dict(raw))
        name = as_text(nb.get("name")) or "?"
        nb["path"], nb["ipynb_exists"] = local_path(nb.get("path"), folder, ".ipynb", name)
        nb["html"], nb["html_exists"] = local_path(nb.get("html"), folder, ".html", name)
        if not as_text(nb.get("status")) and nb["ipynb_exists"]:
            meta = _notebook_meta(nb["path"])
            nb["status"] = as_text(meta.get("status"))
            nb["verdict"] = nb.get("verdict") or as_text(as_dict(meta.get("verdict")).get("line"))
        out.append(nb)
    listed = {Path(nb["path"]).name for nb in out}
    for path in sorted(folder.glob("*.ipynb")):  # on disk but not (yet) in the index: a run in progress?
        if path.name not in listed:
            meta = _notebook_meta(str(path))
            html, html_exists = local_path(None, folder, ".html", path.stem)
            out.append({"name": path.stem, "status": as_text(meta.get("status")) or "not in the index",
                        "path": str(path), "ipynb_exists": True, "html": html, "html_exists": html_exists,
                        "verdict": as_text(as_dict(meta.get("verdict")).get("line")),
                        "error": as_text(meta.get("error"))})
    return out


def load(folder: str | Path) -> dict[str, Any]:
    """A record folder's index (or its run.json records shaped alike); RunbookError when unreadable."""
    folder = Path(folder)
    try:
        loaded = _load(folder)
    except (BadRecord, OSError) as exc:
        raise RunbookError(f"{folder}: {exc}") from None
    if loaded is None:
        raise RunbookError(f"{folder}: no {INDEX} or *{RUN_SUFFIX}: not a record folder")
    kind, index = loaded
    return {**index, "kind": kind}


def show(root: str | Path, ref: str | Path) -> dict[str, Any]:
    """Everything about one incident: its index, file existence per notebook, same-id folders."""
    folder = find(root, ref)
    index = load(folder)
    summary = summarize(folder, index["kind"], index)
    detail = {**index, "id": summary["id"], "folder": str(folder), "name": folder.name,
              "duration_s": summary["duration_s"], "notebooks": _notebooks(index, folder)}
    detail["others"] = [{"folder": s["folder"], "name": s["name"], "start": s["start"], "status": s["status"]}
                        for s in scan(root, warn=False).incidents
                        if s["id"] == summary["id"] and Path(s["folder"]).resolve() != folder]
    return detail

