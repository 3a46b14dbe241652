"""Rendering for notebook cells: markdown tables and notes, never raw Python reprs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """One markdown table cell: escaped pipes, no newlines, `n/a` for missing."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def kv_table(pairs: Iterable[tuple[str, Any]], headers: Sequence[str] = ("", "")) -> str:
    """Two columns, key and value. Without headers, the first pair is the header row.

    Markdown tables must have a header row; an empty one renders (JupyterLab, nbconvert HTML) as a
    blank band above the table, so the first pair, usually the headline (e.g. the verdict), takes
    its place, left-aligned like the rows.
    """
    rows = list(pairs)
    if rows and not any(str(h).strip() for h in headers):
        first, *rest = rows
        text = table([cell(v) for v in first], rest).split("\n")
        text[1] = "|" + ":---|" * len(first)  # left-aligned: a headline, not column titles
        return "\n".join(text)
    return table(headers, rows)


def counts(value: dict[str, Any] | None) -> str:
    """`{"rate_limited": 3, "ok": 2}` as `3 rate limited, 2 ok` (most first): prose, not a dict repr."""
    items = sorted((value or {}).items(), key=lambda kv: (-kv[1], str(kv[0])))
    return ", ".join(f"{n} {str(k).replace('_', ' ')}" for k, n in items) or "none"


def codes(values: Iterable[Any] | None) -> str:
    """`[401, 401, 200]` as `401 x2, 200`: status codes in order of first appearance, repeats counted."""
    seen: dict[str, int] = {}
    for v in values or []:
        key = str(v if v not in (None, "") else "000")
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in seen.items()) or "none"
