"""Named, JSON-serialisable results recorded inside the executed notebook, and read back.

A result is a display output carrying our own MIME type next to a human rendering (markdown),
so the same output reads well in JupyterLab and HTML and is machine-readable for later
notebooks, the CLI's verdict line and the archive. (We do not use scrapbook: unmaintained.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ._time import iso_z

MIME = "application/vnd.mistral-runbooks.record+json"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# The record names other code reads back (CLI verdict line, respond, the archive, the postmortem):
# one spelling each. A change record is any name starting with CHANGE_PREFIX ("change_rotate_secret").
VERDICT = "verdict"
CHANGE_PREFIX = "change"

# Outside a kernel (unit tests, scripts) records are kept here instead of being displayed.
LOCAL: dict[str, Any] = {}


def record(name: str, value: Any, *, markdown: str | None = None) -> None:
    """Record `value` under `name` and show `markdown` (or a one-line note) in its place."""
    if not _NAME.match(name):
        raise ValueError(f"record name {name!r} must match {_NAME.pattern}")
    payload = {"name": name, "recorded_at": iso_z(),
               "value": json.loads(json.dumps(value, allow_nan=False))}
    LOCAL[name] = payload["value"]
    shell = ipython()
    if shell is None:
        return
    from IPython.display import display

    bundle = {MIME: payload, "text/plain": f"[recorded: {name}]"}
    if markdown:
        bundle["text/markdown"] = markdown
    display(bundle, raw=True)


def is_change(name: object) -> bool:
    """Whether a record name is a change record (`change`, `change_rotate_secret`, ...)."""
    return isinstance(name, str) and name.startswith(CHANGE_PREFIX)


def applied_changes(records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> value of the change records that were applied (dry runs and refusals left out)."""
    return {name: v for name, v in records.items() if is_change(name) and isinstance(v, dict) and v.get("applied")}


def ipython() -> Any:
    """The running IPython shell when inside a kernel, else None (unit tests, scripts, the CLI)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def iter_records(notebook: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Every record in cell order: {"name", "recorded_at", "value", "cell"}."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text("utf-8"))
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if MIME in data:
                payload = data[MIME]
                if isinstance(payload, str):  # some writers store JSON MIME data as text
                    payload = json.loads(payload)
                found.append({**payload, "cell": index})
    return found


def read_records(notebook: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Name -> value; a name recorded twice keeps its last value."""
    return {r["name"]: r["value"] for r in iter_records(notebook)}
