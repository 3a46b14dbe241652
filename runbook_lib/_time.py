"""One home for UTC time in records: folder stamps, ISO-8601 `...Z` text, and lenient ISO parsing.

Every record, index and manifest writes times as ISO 8601 in UTC with a `Z` suffix, and reads back
whatever an operator or another tool wrote (an offset, no zone at all meaning UTC, nanoseconds from
Kubernetes). Keeping the format and the parser here means a reviewer's timeline never mixes forms.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_NANOS = re.compile(r"^(.*\.\d{6})\d+(.*)$")


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def utc_stamp(when: datetime | None = None) -> str:
    """`20261123T100052Z`: the compact stamp used in folder and file names (sorts by time)."""
    return (when or now()).strftime("%Y%m%dT%H%M%SZ")


def iso_z(when: Any = None, timespec: str = "seconds") -> str:
    """An aware datetime, pandas Timestamp or epoch seconds as `2026-11-23T10:00:52Z` (default: now).

    pandas Timestamps keep their full precision (`timespec` applies to datetimes and epochs only), so
    a sample time read back from a record is the same instant the series has.
    """
    if when is None:
        when = now()
    elif isinstance(when, (int, float)):
        when = datetime.fromtimestamp(float(when), UTC)
    if type(when).__name__ == "Timestamp":  # pandas, without importing it
        return when.isoformat().replace("+00:00", "Z")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse(value: object) -> datetime | None:
    """An ISO-8601 text as an aware UTC datetime (no zone = UTC; `Z`; nanoseconds cut), else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if m := _NANOS.match(text):  # Kubernetes and Prometheus write nanoseconds; Python keeps micro
        text = m.group(1) + m.group(2)
    try:
        dt = datetime.fromisoformat(text)
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:00-05:00
        return None


def epoch(value: object) -> float | None:
    """An ISO-8601 text as epoch seconds, or None when it is not one."""
    dt = parse(value)
    try:
        return None if dt is None else dt.timestamp()
    except (OverflowError, ValueError):
        return None
