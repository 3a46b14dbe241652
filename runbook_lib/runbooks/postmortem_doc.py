"""The postmortem document: the seed's template, prefilled from what the postmortem runbook measured.

Kept apart from the runbook's steps (postmortem.py) because it is prose: milestones, the root cause
as a sentence, detection and resolution facts, action items seeded from the class and the gaps. What
only people know is marked `_(to fill)_`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import display, record
from ..records.format import human_duration
from ..records.incident_data import IncidentData

CLASS_TITLES = {"auth": "Authentication failure (401)", "rate_limit": "Rate limited (429)",
                "provider_error": "Mistral service error (5xx)", "network": "Network / timeout",
                "service": "Our service", "resolved": "No errors at triage"}

# Seeded action items per error class: (priority, action). People confirm, assign and date them.
ACTIONS = {
    "auth": [("P1", "Confirm the key in the Secret is the working one (fingerprints match) and revoke the old key"),
             ("P2", "Alert on 401 from the Mistral API separately from other errors"),
             ("P3", "Automate key rotation with an overlap period and a test of the new key before the switch")],
    "rate_limit": [("P1", "Review workspace limits at https://admin.mistral.ai/plateforme/limits; request an "
                          "increase if the traffic is legitimate"),
                   ("P2", "Client-side concurrency limit / queue sized from the limit (MAX_CONCURRENT_REQUESTS)"),
                   ("P3", "Alert when x-ratelimit-remaining falls below 20% of the limit")],
    "provider_error": [("P1", "Keep the fallback (MISTRAL_FALLBACK) tested, so switching is routine"),
                       ("P2", "Retries with exponential backoff and jitter for 5xx, bounded by a budget"),
                       ("P3", "Subscribe the on-call channel to https://status.mistral.ai")],
    "network": [("P1", "Review egress NetworkPolicies, DNS and proxy settings for api.mistral.ai"),
                ("P2", "Set client timeouts from the measured time to first byte, not a guess"),
                ("P3", "A synthetic probe from inside the cluster, alerting on DNS/TCP/TLS failures")],
}
# A network incident's actions follow the phase that failed: a hung or slow API is not fixed by egress rules.
SLOW_API_ACTIONS = [
    ("P1", "Set client timeouts from the measured time to first byte, with a fallback (MISTRAL_FALLBACK) for when "
           "the API hangs"),
    ("P2", "Report the slow or unanswered calls to Mistral support with the recorded timings; check "
           "https://status.mistral.ai"),
    ("P3", "A synthetic probe alerting on the API's time to first byte, not only on errors")]
GENERIC_ACTIONS = [("P2", "Add a runbook step or alert for what this incident showed")]


def error_class(data: IncidentData) -> str:
    """The class the triage decided (index, else the triage verdict record)."""
    cls = data.index.get("error_class")
    if not cls:
        verdicts = [v for nb, v in data.values(record.VERDICT) if nb == "triage"]
        cls = verdicts[-1].get("branch") if verdicts else None
    return str(cls or "unknown")


def _diagnosis_verdict(data: IncidentData) -> tuple[str | None, dict[str, Any]]:
    """(notebook, verdict value) of the diagnosis runbook, when one ran."""
    found = [(nb, v) for nb, v in data.values(record.VERDICT) if nb.startswith("diagnose_") and isinstance(v, dict)]
    return found[-1] if found else (None, {})


def root_cause(data: IncidentData) -> str:
    """The measured cause as one sentence (operator instructions belong in the action items)."""
    nb, v = _diagnosis_verdict(data)
    cls = error_class(data)
    if nb == "diagnose_auth":
        return (f"The Mistral API rejected the API key our service uses (HTTP 401); the diagnosis found the key "
                f"{str(v.get('outcome') or 'unexplained').replace('_', ' ')}.")
    if nb == "diagnose_rate_limit":
        return (f"Our calls exceeded the workspace's rate limit (HTTP 429, {str(v.get('kind') or 'limit').replace('_', ' ')})"
                "; the provider refused the calls over it.")
    if nb == "diagnose_server_error":
        provider = str(v.get("provider") or "")
        return ("Mistral's API answered with server errors (HTTP 5xx)" +
                (" while its status page reported an incident." if provider == "incident" else
                 "; the provider's status page did not show an incident when checked." if provider == "no incident"
                 else "; the provider's status page could not be read, so whether Mistral acknowledged it is unknown."))
    if nb == "diagnose_network":
        cause = v.get("cause")
        sentence = {
            "dns": "The API's host name did not resolve (DNS)",
            "tcp_refused": "Connections to the API were refused (TCP)",
            "tcp": "Connections to the API could not be established in time (TCP)",
            "tls": "The TLS handshake with the API failed",
            "first_byte": "The API accepted connections but did not answer in time (first byte)",
        }.get(str(cause), "Every network phase to the API passed when measured: the calls were slow, "
                           "not blocked")
        return sentence + (f"; {v['policy_cause']}" if _policy_is_cause(v) else "") + "."
    return {"our_service": "Our service failed while the Mistral API answered normally.",
            "resolved": "No cause was measured: the API and our service were healthy at triage."}.get(
        cls, "_(to fill: no diagnosis runbook recorded a verdict)_")


def _policy_is_cause(v: dict[str, Any]) -> bool:
    """The egress policy finding, reconciled with the measurement, names the cause (older records: by its words)."""
    if "policy_is_cause" in v:
        return v["policy_is_cause"] is True
    return bool(v.get("policy_cause")) and "not the cause" not in v["policy_cause"] and "does not explain" not in v["policy_cause"]


def _milestones(data: IncidentData, impact: dict[str, Any], timings: dict[str, Any]) -> list[tuple[str, str]]:
    """The template's milestones with the times the records give (or what is missing)."""
    idx = data.index
    nb, _v = _diagnosis_verdict(data)
    diag_at = next((r["recorded_at"] for r in data.records.get(nb or "", []) if r.get("name") == record.VERDICT),
                   None)
    ic = idx.get("incident_commander") or idx.get("operator")
    return [
        ("Impact started (measured)", impact.get("start") or "not measured"),
        ("First alert", timings.get("detected_at") if timings.get("detected_by") == "alert" else
         "no alert of this incident fired before triage"),
        ("Incident declared (runbook response started)" + (
            f"; IC {idx['incident_commander']}" if idx.get("incident_commander") else
            f"; IC not named (runbooks run by {ic})" if ic else "; IC not named"),
         idx.get("started_at") or "not recorded"),
        ("Root cause identified (diagnosis verdict)", diag_at or "no diagnosis ran"),
        ("First mitigation action applied", timings.get("first_action_at") or "none applied by the runbooks"),
        ("Service restored (impact ended)", impact.get("end") or "not measured"),
    ]


def render_markdown(data: IncidentData, impact: dict[str, Any], timings: dict[str, Any], merged: Any,
                    figures: list[str]) -> str:
    """The seed's postmortem template, prefilled; what only people know is marked `_(to fill)_`."""
    idx = data.index
    cls = error_class(data)
    title = CLASS_TITLES.get(cls, cls)
    found = impact.get("found")
    date = (impact.get("start") or idx.get("started_at") or "")[:10] or "_(to fill)_"
    severity = idx.get("severity") or next((v.get("severity") for nb, v in data.values(record.VERDICT) if nb == "triage"),
                                           None) or "_(to fill)_"
    history = idx.get("severity_history") or []
    ic = idx.get("incident_commander") or ""
    changes = data.changes()
    bad = impact.get("bad_requests", impact.get("failed_requests"))
    lines = [f"## Incident: Mistral AI {title}",
             f"**Date:** {date}  ",
             f"**Duration of impact:** {human(impact.get('duration_s')) if found else '_(to fill: not measured)_'}  ",
             f"**Severity:** {severity}"
             + (f" (history: {' -> '.join(h['to'] for h in history)})" if len(history) > 1 else "")
             + (f"; {history[-1]['why']}" if len(history) > 1 and history[-1].get("by") == "postmortem" else "")
             + "  ",
             f"**Incident Commander:** {ic or '_(to fill)_'}"
             + (f" (runbooks run by {idx['operator']})" if idx.get("operator") and idx.get("operator") != ic else "")
             + "  ",
             f"**Incident:** {idx.get('id') or data.source}  ",
             "", "### Summary",
             (f"From {impact['start']} to {impact['end']} UTC, {bad:,} calls to the Mistral API were bad for our "
              f"users ({impact['failed_requests']:,} failed of {impact['requests']:,} completed"
              + (f", {impact['slow_requests']:,} slow" if impact.get("slow_requests") else "")
              + (f"; failed by code: {', '.join(f'{k}: {v:,}' for k, v in impact['by_code'].items())}"
                 if impact.get("by_code") else "")
              + f"), peaking at {impact['peak_error_ratio']:.0%}. Triage classified it as **{title}**."
              if found else f"Triage classified it as **{title}**; no impact window was measured in the data"
              f" ({impact.get('selected_by') or impact.get('method', 'no data')}).")
             + f" Root cause: {root_cause(data)}",
             "", "### Milestones (UTC)", "| Milestone | Time |", "|-----------|------|"]
    lines += [f"| {display.cell(m)} | {display.cell(t)} |" for m, t in _milestones(data, impact, timings)]
    lines += ["", "### Timeline (UTC)", "| Time | Event |", "|------|-------|"]
    if merged is not None and not merged.empty:
        lines += [f"| {t.strftime('%H:%M:%S')} | {display.cell(f'[{s}] {e}')} |"
                  for t, s, e in zip(merged["time"], merged["source"], merged["event"], strict=True)]
    lines += ["", "### Root Cause", root_cause(data), ""]
    lines += [f"- {f}" for f in _findings(data)]
    lines += ["", "_(to fill: why it happened, beyond what the runbooks measured)_",
              "", "### Impact",
              "- Users affected: _(to fill: from product analytics)_",
              f"- Duration of impact: {human(impact.get('duration_s')) if found else 'unknown'}",
              (f"- Bad calls (failed, timed out or slower than {impact.get('latency_bound_s') or 'n/a'} s): {bad:,}"
               f" (from {impact.get('source')})" if found else
               "- Bad calls: unknown (" + ("no metrics or logs" if impact.get("method") == "no traffic data" else
                                            "no impact window found in the data") + ")"),
              f"- Requests failed: {impact['failed_requests']:,}" if found else "- Requests failed: unknown",
              f"- Affected models: {', '.join(impact.get('affected_models') or []) or 'n/a'}",
              "- Revenue impact: _(to fill, if applicable)_",
              "", "### Detection",
              "How was the incident detected?",
              f"- [{'x' if timings.get('detected_by') == 'alert' else ' '}] Automated alerting"
              + ("" if timings.get("detected_by") == "alert" else " (no alert of this incident fired before triage)"),
              "- [ ] Customer report _(to fill)_", "- [ ] Internal testing _(to fill)_",
              f"- Time to detect: {human(timings.get('time_to_detect_s'))} ({timings.get('time_to_detect_s_how')})",
              "", "### Resolution"]
    lines += _resolution(changes, timings)
    lines += ["", "### Action Items",
              "| Priority | Action | Owner | Due Date | Status |", "|----------|--------|-------|----------|--------|"]
    lines += [f"| {p} | {display.cell(a)} | @owner | YYYY-MM-DD | [ ] |" for p, a in action_items(data, timings)]
    lines += ["", "### Lessons Learned", "- What went well: _(to fill)_", "- What could be improved: _(to fill)_",
              "- What we got lucky with: _(to fill)_", "", "### Evidence",
              f"- Bundle: `{_rel(data, data.bundle)}`" + (" (seal intact)" if data.bundle and not data.seal_problems else
                                                          f" (**seal broken**: {'; '.join(data.seal_problems)})"
                                                          if data.seal_problems else ""),
              *([f"- Manifest: `{data.seal['manifest_sha256']}` (recorded at collection, outside the bundle)"
                 + (f"; signed by `{data.seal.get('public_key')}`, signature `{data.seal.get('signature_file')}` "
                    "(`runbook verify --public-key KEY.pub` checks it)" if data.seal.get("signed") else
                    "; not signed")] if data.seal.get("manifest_sha256") else []),
              *[f"- Figure: `{Path(f).name}`" for f in figures],
              *[f"- Not available: {m}" for m in data.missing],
              f"- Impact detection: {impact.get('method', 'n/a')}; episode: {impact.get('selected_by') or 'n/a'}", ""]
    return "\n".join(lines)


def _resolution(changes: list[dict[str, Any]], timings: dict[str, Any]) -> list[str]:
    """The Resolution section: each change with what it set and its undo; what ended the impact; the times."""
    lines = ([f"- {c.get('at')}: {_change_text(c)} by {c.get('who')}"
              f" ({'verified' if c.get('verified') else 'NOT verified'}); undo: `{c.get('undo')}`" for c in changes]
             or ["- No change was applied by the runbooks."])
    return lines + [
        "- What ended the impact: _(to fill: " + (
            f"did the change at {timings.get('first_action_at')} end it, or did the fault clear on its own?"
            if timings.get("mitigated_at") else "no change was applied before it ended; e.g. the provider "
            "recovered, or someone acted outside the runbooks") + ")_",
        f"- Time to first mitigation action: {human(timings.get('time_to_first_action_s'))} "
        f"({timings.get('time_to_first_action_s_how')})",
        f"- Time to mitigate: {human(timings.get('time_to_mitigate_s'))} ({timings.get('time_to_mitigate_s_how')})",
        f"- Time to resolve: {human(timings.get('time_to_resolve_s'))} ({timings.get('time_to_resolve_s_how')})"]


def _rel(data: IncidentData, path: Any) -> str:
    """A path as the reader of the incident folder needs it: relative to the folder when inside it."""
    if not path:
        return "none"
    if data.folder is not None:
        try:
            return str(Path(path).resolve().relative_to(Path(data.folder).resolve()))
        except ValueError:
            pass
    return str(path)


def _change_text(c: dict[str, Any]) -> str:
    """What a change set, with before and after when recorded (not only "set env on deployment/x")."""
    diff = c.get("diff") or []
    detail = "; ".join(f"{d.get('field')}: {d.get('before')} -> {d.get('after')}" for d in diff if isinstance(d, dict))
    return f"{c.get('action')} on {c.get('target')}" + (f" ({detail})" if detail else "")


def _findings(data: IncidentData) -> list[str]:
    """What the diagnosis measured (explanations and summaries), not its advice (that is an action item)."""
    out = []
    for nb, rs in data.records.items():
        if nb == "triage" or not nb.startswith("diagnose_"):
            continue
        for r in rs:
            v = r.get("value")
            if isinstance(v, dict):
                for key in ("explanation", "summary"):
                    if isinstance(v.get(key), str) and v[key]:
                        out.append(f"{nb} / {r['name']}: {v[key]}")
    return out[:6]


def _advice(data: IncidentData) -> list[str]:
    """The diagnoses' advice strings: instructions for people, so they become action items."""
    return [v["advice"] for nb, rs in data.records.items() if nb.startswith("diagnose_") for r in rs
            if isinstance(v := r.get("value"), dict) and isinstance(v.get("advice"), str) and v["advice"]][:4]


def action_items(data: IncidentData, timings: dict[str, Any]) -> list[tuple[str, str]]:
    """Seeded from the class, the changes left in place, the gaps in evidence, and slow detection."""
    items = list(ACTIONS.get(error_class(data), GENERIC_ACTIONS))
    nb, v = _diagnosis_verdict(data)
    if nb == "diagnose_network":
        if v.get("cause") in ("first_byte", None, "ok"):
            items = list(SLOW_API_ACTIONS)
        if v.get("policy_cause") and not _policy_is_cause(v):  # true and worth fixing, but not this incident's cause
            items.append(("P2", f"Review the egress NetworkPolicy (found by the diagnosis, not this incident's cause): "
                                f"{v['policy_cause']}"))
    items += [("P2", f"From the diagnosis: {a}") for a in _advice(data)]
    for c in data.changes():
        items.append(("P2", f"Decide whether to keep or undo the mitigation '{c.get('action')}' on {c.get('target')} "
                            f"(undo: {c.get('undo')})"))
        if not c.get("verified"):
            items.append(("P1", f"Check the unverified change '{c.get('action')}' on {c.get('target')}"))
    for m in data.missing:
        items.append(("P3", f"Make this evidence source available next time: {m}"))
    ttd = timings.get("time_to_detect_s")
    if ttd is not None and ttd > 300:
        items.append(("P2", f"Detection took {human(ttd)}: alert earlier (see deploy/prometheus/mistral-rules.yml)"))
    return items


def human(seconds: float | None) -> str:
    """A duration for the document: 1m05s, n/a when unknown."""
    return human_duration(seconds, missing="n/a")
