"""Rendering for notebook cells: markdown tables and notes, never raw Python reprs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
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


def next_runbook(notebook: str | None, incident_id: str) -> str:
    """The verdict's next step: a link to that runbook in this incident folder and the command that opens it.

    The kernel runs in the record's folder (headless and in JupyterLab), so the relative link is
    the runbook's record (a `respond` run) or its prepared copy (JupyterLab: saving this notebook
    prepares it there with the parameters carried over). From a shell, `runbook open` prepares it
    in the same folder with the parameters of this folder's runs.
    """
    if not notebook:
        return "no diagnosis notebook"
    from .paths import outputs_dir

    folder = Path.cwd()
    ref = (f"--incident {folder.name}" if folder.resolve().parent == outputs_dir().resolve()
           else f"--incident-id {incident_id}")
    hint = (" (save this notebook first: saving seals this record and prepares it here with these parameters)"
            if os.environ.get("JPY_SESSION_NAME") else "")
    return (f"open [{notebook}.ipynb]({notebook}.ipynb) in this incident folder{hint}; "
            f"from a shell: `runbook open {notebook} {ref}`")
