"""What an incident records of its alerts: a complete, compact history and a bounded notification log.

`runbook serve` adds every notification it applies; the postmortem's timeline reads the log and
`runbook show` the counts, so nothing is capped silently.
"""

from __future__ import annotations

from typing import Any

from .alerts import RESOLVED, Alert

MAX_ALERTS_KEPT = 100  # notifications in an incident's `alerts` log; `alert_history` keeps every alert whole


def entry(alert: Alert, received_at: str, job: str) -> dict[str, Any]:
    """One notification in the incident's log (labels are kept once per alert, in `alert_history`)."""
    a = alert
    return {"status": a.status, "name": a.name, "fingerprint": a.fingerprint, "starts_at": a.starts_at,
            "ends_at": a.ends_at, "received_at": received_at, "summary": a.annotations.get("summary"),
            "job": job}


def recorded(index: dict[str, Any], alert: Alert, received_at: str, job: str) -> dict[str, Any]:
    """The incident's alert fields with one more notification (`job`: its spool file's name).

    `alert_history` is complete and compact: per fingerprint its name and labels (once), first and last
    notified, how many notifications (firing, resolved) and its current state. `alerts`, the log of
    notifications the timeline reads, keeps at most MAX_ALERTS_KEPT: over it, an older entry that
    repeats another kept one (same alert, same status) goes first, so every alert's firing and its
    resolution stay in the log; `alerts_dropped` counts what went and `notifications` all there were.
    """
    a = alert
    history = dict(index.get("alert_history") or {})
    h = dict(history.get(a.fingerprint) or {"name": a.name, "labels": a.labels, "first_seen": received_at,
                                              "notifications": 0, "firing": 0, "resolved": 0})
    h["notifications"] = int(h.get("notifications") or 0) + 1
    h[a.status] = int(h.get(a.status) or 0) + 1
    h.update(last_seen=received_at, state=a.status, starts_at=a.starts_at, last_job=job,
             summary=a.annotations.get("summary"))
    if a.status == RESOLVED:
        h["ends_at"] = a.ends_at
    history[a.fingerprint] = h
    kept = [*(index.get("alerts") or []), entry(alert, received_at, job)]
    dropped = int(index.get("alerts_dropped") or 0)
    while len(kept) > MAX_ALERTS_KEPT:
        kept.pop(repeated(kept))  # the first entry (what opened the incident) always stays
        dropped += 1
    return {"alerts": kept, "alerts_dropped": dropped, "alert_history": history,
            "notifications": int(index.get("notifications") or 0) + 1}


def repeated(kept: list[dict[str, Any]]) -> int:
    """The oldest entry after the first that a later one repeats (same alert, same status); else 1."""
    for i in range(1, len(kept) - 1):
        key = (kept[i].get("fingerprint"), kept[i].get("status"))
        if any((e.get("fingerprint"), e.get("status")) == key for e in kept[i + 1:]):
            return i
    return 1
