"""The reviewer's entry point of a record folder: `index.html`, and the banner atop every record.

An incident folder holds twenty-odd files; a reviewer months later needs one page that says what
the incident was (id, severity and how it changed, class, status, impact) and links the records in
the order they were made, the postmortem, the evidence and the messages. The page is rewritten after
every run into the folder, from `incident.json` and the `*.run.json` files only (no notebook is
parsed), with relative links, so a copied or moved folder still works.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .._time import iso_z
from .incident import read_index

PAGE = "index.html"


def _runs(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for path in folder.glob("*.run.json"):
        try:
            value = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            runs.append({**value, "_file": path.name})
    return sorted(runs, key=lambda r: str(r.get("started_at") or ""))


def _link(name: str | None, folder: Path, text: str | None = None) -> str:
    if not name or not (folder / name).exists():
        return html.escape(text or name or "-")
    return f'<a href="{html.escape(name, quote=True)}">{html.escape(text or name)}</a>'


def _facts(index: dict[str, Any]) -> list[tuple[str, str]]:
    pm = index.get("postmortem") if isinstance(index.get("postmortem"), dict) else {}
    history = index.get("severity_history") or []
    sev = str(index.get("severity") or "-")
    if history:
        sev += " (" + "; ".join(f"{h.get('at')}: {h.get('from') or '-'} -> {h.get('to')} by {h.get('by')}"
                                for h in history) + ")"
    rows = [("incident", index.get("id")), ("severity", sev), ("error class", index.get("error_class")),
            ("status", index.get("status")), ("response started", index.get("started_at")),
            ("response finished", index.get("finished_at")),
            ("incident commander", index.get("incident_commander") or "-"), ("operator", index.get("operator") or "-"),
            ("impact", f"{pm.get('impact_start')} to {pm.get('impact_end')}" if pm.get("impact_start") else
             "not measured (no postmortem yet)"),
            ("resolved at", index.get("resolved_at") or "-"), ("diagnosis", index.get("diagnosis") or "-")]
    return [(k, str(v if v is not None else "-")) for k, v in rows]


def render(folder: str | Path) -> str:
    """The page's HTML for `folder` (an incident folder or a plain run's record folder)."""
    folder = Path(folder)
    index = read_index(folder) or {}
    title = f"Incident {index.get('id')}" if index else f"Record {folder.name}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;"
             "vertical-align:top}.failed,.timed_out{color:#b00}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if index:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                         for k, v in _facts(index)) + "</table>")
    parts.append("<h2>Records, in the order they were made</h2><table><tr><th>#</th><th>runbook</th><th>status</th>"
                 "<th>started (UTC)</th><th>verdict</th><th>files</th></tr>")
    for i, run in enumerate(_runs(folder), 1):
        name = str(run.get("notebook") or "")
        verdict = (run.get("verdict") or {}).get("line") if isinstance(run.get("verdict"), dict) else None
        files = " ".join(_link(f"{name}{ext}", folder, label) for ext, label in
                         ((".html", "html"), (".ipynb", "notebook"))) + " " + _link(run["_file"], folder, "run.json")
        status = str(run.get("status") or "")
        parts.append(f"<tr><td>{i}</td><td>{html.escape(name)}</td><td class='{html.escape(status)}'>"
                     f"{html.escape(status)}</td><td>{html.escape(str(run.get('started_at') or ''))}</td>"
                     f"<td>{html.escape(str(verdict or run.get('error') or ''))}</td><td>{files}</td></tr>")
    parts.append("</table>")
    extra = []
    pm = index.get("postmortem") if isinstance(index.get("postmortem"), dict) else {}
    if pm.get("markdown"):
        extra.append(f"<li>Postmortem: {_link(pm['markdown'], folder)}</li>")
    ev = index.get("evidence") if isinstance(index.get("evidence"), dict) else {}
    if ev.get("bundle"):
        extra.append(f"<li>Evidence bundle: {_link(ev['bundle'], folder)} ({_link(ev.get('archive'), folder)}); "
                     "check it with <code>runbook verify</code></li>")
    for entry in index.get("communications") or []:
        if isinstance(entry, dict):
            extra.append(f"<li>Message {html.escape(str(entry.get('status')))} ({html.escape(str(entry.get('channel')))}"
                         f", {html.escape(str(entry.get('severity')))}, {html.escape(str(entry.get('at')))}, "
                         f"{'posted' if entry.get('posted') else 'draft'}): {_link(entry.get('file'), folder)}</li>")
    for change in index.get("changes_applied") or []:
        if isinstance(change, dict):
            extra.append(f"<li>Change {html.escape(str(change.get('action')))} on "
                         f"{html.escape(str(change.get('target')))} at {html.escape(str(change.get('at')))} by "
                         f"{html.escape(str(change.get('who')))}; undo: <code>{html.escape(str(change.get('undo')))}"
                         "</code></li>")
    if extra:
        parts.append("<h2>Postmortem, evidence, messages, changes</h2><ul>" + "".join(extra) + "</ul>")
    parts.append(f"<p><small>Written {html.escape(iso_z())} by mistral-runbooks from incident.json and the "
                 "*.run.json files; links are relative to this folder.</small></p></body></html>")
    return "\n".join(parts)


def write(folder: str | Path) -> Path:
    """Write (atomically) the folder's index.html."""
    folder = Path(folder)
    path = folder / PAGE
    tmp = folder / f".{PAGE}.tmp"
    tmp.write_text(render(folder), "utf-8")
    tmp.replace(path)
    return path


def banner_markdown(*, incident_id: str, notebook: str, status: str, started_at: str, finished_at: str,
                    operator: str | None, provenance: dict[str, Any], error: str | None = None) -> str:
    """The first cell of every executed record: what, when, who, how it ended, which code; links."""
    commit = provenance.get("git_commit")
    code = f"mistral-runbooks {provenance.get('version')}" + (f" (commit {commit[:12]}"
                                                               + (", modified" if provenance.get("git_dirty") else "")
                                                               + ")" if commit else "")
    state = status.upper() + (f": {error}" if error and status != "succeeded" else "")
    return (f"> **Incident {incident_id} · runbook `{notebook}` · {state}**  \n"
            f"> {started_at} to {finished_at} UTC · operator: {operator or 'not named'} · {code} · "
            f"notebook sha256 {str(provenance.get('notebook_sha256') or '')[:12]}  \n"
            f"> [Incident index]({PAGE}) · [{notebook}.run.json]({notebook}.run.json)")
