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
