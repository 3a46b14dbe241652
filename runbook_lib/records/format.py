"""The archive as text for a terminal: `runbook list`'s table and `runbook show`'s detail.

An index is data from elsewhere, so every value printed goes through `_clean`: terminal control
sequences in a verdict or an undo command are shown as `?`, never executed by the terminal. Only
the standard library is imported: `runbook list` stays fast.
"""

from __future__ import annotations

import re
from typing import Any

from .._time import parse as parse_time
from ._values import as_dict, as_list, as_number

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def human_duration(seconds: object, missing: str = "-") -> str:
    """31s, 1m05s, 2h03m; `missing` when unknown (or negative: no duration is)."""
    s = as_number(seconds)
    if s is None or s < 0:
        return missing
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
    # IMPACT is how long users were hurt (measured by the postmortem); RUN is how long the runbooks ran
    header = ("ID", "START (UTC)", "SEV", "CLASS", "STATUS", "IMPACT", "RUN", "CHANGES", "FOLDER")
    lines = [header] + [(_clean(r["id"]), _minute(r["start"]), _clean(r["severity"]), _clean(r["error_class"]),
                         _clean(r["status"]), human_duration(r.get("impact_s")), human_duration(r["duration_s"]),
                         str(r["changes"]), _clean(r["name"])) for r in rows]
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
           _field("folder", d["folder"]),
           # The runbooks' own span: not the impact's (the postmortem below measures that), so it is
           # labelled as what it is rather than "started/finished" (a 5 s response read as a 5 s incident).
           _field("response" if d.get("kind") == "incident" else "run",
                  f"{_second(d.get('started_at'))} .. {_second(d.get('finished_at'))}"
                  + (f"  ({human_duration(d['duration_s'])})" if d.get("duration_s") is not None else "")),
           _field("severity", _severity_text(d)), _field("class", d.get("error_class")),
           _field("status", d.get("status")),
           # an incident's index keeps triage's line; its severity may have moved since (above)
           _field("triage" if d.get("kind") == "incident" else "verdict", d.get("verdict"))]
    if d.get("diagnosis"):
        out.append(_field("diagnosis", d["diagnosis"]))
    if d.get("replay_of"):  # issue 20: a `runbook replay` folder, not an incident of its own
        out.insert(1, _field("replay of", d["replay_of"]))
    out += _alert_lines(d)
    out += _notebook_lines(d["notebooks"]) + _change_lines(as_list(d.get("changes_applied")))
    out += _evidence_lines(as_dict(d.get("evidence"))) + _postmortem_lines(as_dict(d.get("postmortem")))
    if d.get("others"):
        out.append(f"\nother folders for {_clean(d['id'])}:")
        out += [f"  {_clean(o['name'])}  {_minute(o['start'])}  {_clean(o['status'])}" for o in d["others"]]
    return "\n".join(out)


def _severity_text(d: dict[str, Any]) -> str:
    """The incident's severity and, when it moved during the response, how: triage's P3 beside a
    headline P2 read as two severities for one incident until the change was spelled out."""
    history = [as_dict(h) for h in as_list(d.get("severity_history"))]
    sev = _clean(d.get("severity"))
    if len(history) < 2:
        return sev
    steps = [f"{_clean(history[0].get('to'))} by {_clean(history[0].get('by'))} at {_second(history[0].get('at'))}"]
    for h in history[1:]:
        moved = "raised" if str(h.get("to") or "") < str(h.get("from") or "") else "lowered"
        steps.append(f"{moved} to {_clean(h.get('to'))} by {_clean(h.get('by'))} at {_second(h.get('at'))}: "
                     f"{_clean(h.get('why'))}")
    return f"{sev}  ({'; '.join(steps)})"


def _alert_lines(d: dict[str, Any]) -> list[str]:
    """Opened by `runbook serve`: which alert, its state, when it resolved, how many notifications."""
    alert = as_dict(d.get("alert"))
    if not alert:
        return []
    state = _clean(d.get("alert_state"))
    resolved = as_dict(d.get("resolved"))
    if resolved.get("at"):
        state += f" at {_second(resolved['at'])}"
    notes = [as_dict(a) for a in as_list(d.get("alerts"))]
    history = as_dict(d.get("alert_history"))  # serve's complete per-alert summary (older records: none)
    named = [(fp, as_dict(h).get("name")) for fp, h in history.items()] or [(a.get("fingerprint"), a.get("name"))
                                                                           for a in notes]
    joined = sorted({_clean(name) for fp, name in named if fp and fp != alert.get("fingerprint")})
    total = as_number(d.get("notifications")) or len(notes)
    dropped = as_number(d.get("alerts_dropped")) or 0
    count = f"{int(total)} notification(s)" + (f" of {len(history)} alert(s)" if history else "")
    if dropped:  # never a silent cap: say what the notification log no longer holds
        count += (f"; the log keeps {len(notes)} ({int(dropped)} older repeat(s) dropped"
                  + ("; every alert's counts and state are in alert_history)" if history else ")"))
    lines = [_field("alert", f"{_clean(alert.get('name'))} ({_clean(alert.get('fingerprint'))}), {state}; {count}")]
    if joined:  # alerts of the same fault that joined this incident (serve's correlation)
        lines.append(_field("joined by", ", ".join(joined)))
    return lines


def _notebook_lines(notebooks: list[dict[str, Any]]) -> list[str]:
    out = [f"\nnotebooks ({len(notebooks)}):"] if notebooks else ["\nnotebooks: none recorded"]
    for nb in notebooks:
        took = f" in {human_duration(nb.get('duration_s'))}" if as_number(nb.get("duration_s")) is not None else ""
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
        c = as_dict(raw)
        verified = {True: "verified", False: "NOT verified"}.get(c.get("verified"), "verification unknown")
        out.append(f"  {_second(c.get('at'))} by {_clean(c.get('who'))}: {_clean(c.get('action'))} "
                   f"on {_clean(c.get('target'))} ({verified}) [{_clean(c.get('record'))}]")
        out.append(f"    undo: {_clean(c.get('undo'))}")
    return out


def _evidence_lines(ev: dict[str, Any]) -> list[str]:
    if not ev:
        return ["\nevidence: not collected"]
    window = as_dict(ev.get("window"))
    out = ["\nevidence:", f"  bundle:    {_clean(ev.get('bundle'))}", f"  archive:   {_clean(ev.get('archive'))}",
           f"  files:     {_clean(ev.get('files'))}, collected {_second(ev.get('collected_at'))}"]
    if window:
        out.append(f"  window:    {_second(window.get('start'))} .. {_second(window.get('end'))} "
                   f"({human_duration(window.get('seconds'))})")
    missing = as_list(ev.get("missing"))
    out.append("  missing:   " + ("; ".join(_clean(_missing_item(m)) for m in missing) if missing else "none"))
    return out


def _postmortem_lines(pm: dict[str, Any]) -> list[str]:
    if not pm:
        return ["\npostmortem: not written"]
    models = ", ".join(_clean(m) for m in as_list(pm.get("affected_models"))) or "-"
    return ["\npostmortem:", f"  markdown:  {_clean(pm.get('markdown'))}",
            f"  impact:    {_second(pm.get('impact_start'))} .. {_second(pm.get('impact_end'))} "
            f"({human_duration(pm.get('duration_s'))}), peak {_second(pm.get('peak'))}",
            f"  time to detect {human_duration(pm.get('time_to_detect_s'))}, "
            f"to mitigate {human_duration(pm.get('time_to_mitigate_s'))}, "
            f"to resolve {human_duration(pm.get('time_to_resolve_s'))}",
            f"  failed requests: {_clean(pm.get('failed_requests'))} "
            f"(source: {_clean(pm.get('failed_requests_source'))})",
            f"  affected models: {models}"]

