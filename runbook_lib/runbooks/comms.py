"""Incident messages from the seed's templates, filled from what was measured.

Internal (Slack) and external (status page) texts, the next update time from the severity's
cadence, saved as files in the run folder, and optionally posted to a Slack incoming webhook
whose URL is read from an environment variable (the URL is a credential: never a parameter).
A failed post is reported and the run goes on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ..analysis.severity import UPDATE_EVERY_MIN

STATUSES = ("INVESTIGATING", "MITIGATING", "RESOLVED")
EMOJI = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:", "P4": ":white_circle:"}


@dataclass
class Messages:
    internal: str
    external: str
    next_update_utc: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_update(level: str, now: datetime | None = None) -> datetime:
    """Now plus the severity's update cadence (P1: every 15 minutes), rounded up to the minute."""
    now = now or datetime.now(UTC)
    due = now + timedelta(minutes=UPDATE_EVERY_MIN[level])
    return due.replace(second=0, microsecond=0) + (timedelta(minutes=1) if due.second or due.microsecond else timedelta())


def render(*, level: str, status: str, impact: str, action: str, commander: str,
           affected: list[str], workaround: str = "", now: datetime | None = None) -> Messages:
    """The seed's Slack and status-page templates with every placeholder filled."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    now = now or datetime.now(UTC)
    due = next_update(level, now)
    ic = commander if commander.startswith("@") or not commander else f"@{commander}"
    internal = (f"{EMOJI[level]} {level} INCIDENT: Mistral AI Integration\n"
                f"**Status**: {status}\n"
                f"**Impact**: {impact}\n"
                f"**Current action**: {action}\n"
                f"**Next update**: {due:%H:%M} UTC (every {UPDATE_EVERY_MIN[level]} min for {level})\n"
                f"**Incident commander**: {ic or '(unassigned)'}")
    heading = "AI Feature Degradation" if status != "RESOLVED" else "AI Features Restored"
    body = ("We're experiencing issues with our AI-powered features.\n"
            "Some users may experience slower responses or temporary unavailability.\n\n"
            "Our team is actively investigating and working with our AI provider to resolve this."
            if status != "RESOLVED" else
            "The issue affecting our AI-powered features has been resolved. Thank you for your patience.")
    external = (f"{heading}\n\n{body}\n\nAffected services:\n" + "\n".join(f"- {a}" for a in affected)
                + f"\n\nWorkaround: {workaround or 'none at this time'}\n\n"
                f"Last updated: {now:%Y-%m-%d %H:%M} UTC")
    return Messages(internal, external, due.isoformat(timespec="minutes").replace("+00:00", "Z"))


def save(messages: Messages, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    paths = [folder / "message-internal-slack.md", folder / "message-external-statuspage.md"]
    paths[0].write_text(messages.internal + "\n", "utf-8")
    paths[1].write_text(messages.external + "\n", "utf-8")
    return paths


def post_to_slack(messages: Messages, webhook_env: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """POST the internal message to the webhook in `$webhook_env`; never raises, never shows the URL."""
    url = os.environ.get(webhook_env, "").strip()
    if not url:
        return {"posted": False, "reason": f"${webhook_env} is not set: message not posted (saved to files)"}
    try:
        response = httpx.post(url, json={"text": messages.internal}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return {"posted": False, "reason": f"webhook unreachable: {type(exc).__name__}"}
    if response.status_code >= 300:
        return {"posted": False, "reason": f"webhook answered HTTP {response.status_code}: {response.text[:100]}"}
    return {"posted": True, "reason": f"posted (HTTP {response.status_code})"}
