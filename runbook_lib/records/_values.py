"""Index values read defensively: an index is data from elsewhere, so a wrong type reads as unknown.

Shared by the archive reader, its text formatting and bundle verification (standard library only).
"""

from __future__ import annotations

import math
from typing import Any


def as_text(value: object) -> str | None:
    """A non-empty string, else None (a number or list where text belongs is unknown, not an error)."""
    return value if isinstance(value, str) and value else None


def as_number(value: object) -> float | None:
    """A finite int or float as float, else None (booleans and NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:  # a hand-edited 10**400
        return None


def as_dict(value: object) -> dict[str, Any]:
    """The value when it is a dict, else an empty one, so `.get` chains never fail."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    """The value when it is a list, else an empty one."""
    return value if isinstance(value, list) else []
