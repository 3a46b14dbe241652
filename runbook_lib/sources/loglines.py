"""Our service's JSON log line: one schema, and one rule for which requests are errors.

Why one home: the service's request log (one JSON object per Mistral call) is read in three
places: `logstats` (the error-rate estimate when Prometheus is down), `logagg` (the postmortem's
per-minute curve) and `kube.logs` (error lines from pod logs). If they disagreed on field names
or on which codes are errors, triage's estimate and the postmortem's curve would tell different
stories about the same lines.

The line, as the service writes it (`sim/service.py` `_record`, `json.dumps`, keys in this order):

    {"ts": "2026-11-23T10:15:02.123Z", "level": "info" | "error", "msg": "...", "model": "...",
     "code": "200", "latency_ms": 120.5, "correlation_id": "..." | null}

A line records a request when it is a JSON object whose `code` is not null; its model is
`str(model or "?")` and its code `str(code)` (a JSON number 200 reads as "200").

Which requests are errors (`is_error`): a code is OK only when it is three ASCII digits starting
with 2 ("200" to "299"). Everything else is an error: 4xx and 5xx answers, "000" (no answer at all:
timeout, refused connection; what `curl -w %{http_code}` prints) and any code we cannot vouch for.
That includes "2xx" written as text: it names a class of answers, not an answer, so a line that
says it does not record which status came back, and neither do "200 " (padded), "200.0", "٢٠٠"
(non-ASCII digits), "" or true. Counting what we cannot read as an error keeps a logging fault from
passing for success in an error rate.
"""

from __future__ import annotations

import json
from typing import Any

TS, LEVEL, MSG, MODEL, CODE, LATENCY_MS, CORRELATION_ID = (
    "ts", "level", "msg", "model", "code", "latency_ms", "correlation_id")
FIELDS = (TS, LEVEL, MSG, MODEL, CODE, LATENCY_MS, CORRELATION_ID)  # the order the service writes them
NO_RESPONSE = "000"
UNKNOWN_MODEL = "?"


def parse(line: str) -> dict[str, Any] | None:
    """A JSON log line as a dict, or None for plain text (or JSON that is not an object)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def http_code(value: object) -> str | None:
    """`value` as a three-ASCII-digit status code ("000" for no answer), or None when it is not one."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) == 3 and text.isascii() and text.isdigit() else None


def is_error(code: object) -> bool:
    """Whether a request's code is an error: anything but a three-digit 2xx (see the module docstring).

    `code` is the line's `code` as text (`str(code)`); call it for requests only (code not null).
    """
    c = http_code(code)
    return c is None or c[0] != "2"


def request(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(model, code) of a parsed line that records a request; None for the service's other records."""
    code = entry.get(CODE)
    if code is None:
        return None
    return str(entry.get(MODEL) or UNKNOWN_MODEL), str(code)
