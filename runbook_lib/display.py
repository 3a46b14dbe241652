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
    return table(headers, list(pairs))
