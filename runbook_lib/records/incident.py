"""The incident index, `incident.json`: the small file the archive reads instead of notebooks.

One per incident folder, written atomically (temporary file, then rename) so a reader never sees
half of it, and updated section by section under a lock (`update_index`). `respond` creates it;
`runbook serve` adds the alerts; the evidence and postmortem runbooks add their sections.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..paths import write_replacing

INDEX = "incident.json"
_LOCK = threading.Lock()


def index_path(folder: str | Path) -> Path:
    return Path(folder) / INDEX


def read_index(folder: str | Path) -> dict[str, Any] | None:
    """The folder's index, or None when it has none (a plain `runbook run` record)."""
    path = index_path(folder)
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    return value if isinstance(value, dict) else None


def write_index(folder: str | Path, index: dict[str, Any]) -> Path:
    """Atomic: a reader never sees half an index."""
    return write_replacing(Path(folder) / INDEX, json.dumps(index, indent=2, default=str) + "\n")


def update_index(folder: str | Path, /, **sections: Any) -> dict[str, Any]:
    """Set top-level `sections` in the folder's index (creating a minimal one if absent).

    Read-modify-write under a lock shared by threads and processes (`runbook serve` appends alerts
    while the `respond` it started records its notebooks), so neither loses the other's sections.
    """
    with edit_index(folder) as index:
        index.update(sections)
    return index


@contextmanager
def edit_index(folder: str | Path) -> Iterator[dict[str, Any]]:
    """The index to change in place, written back on exit, all under the lock `update_index` uses."""
    folder = Path(folder)
    with _locked(folder):
        index = read_index(folder) or {"id": folder.name, "folder": "."}  # paths relative to the folder
        yield index
        write_index(folder, index)


def set_severity(folder: str | Path, level: str, *, by: str, why: str) -> dict[str, Any]:
    """Make `level` the incident's one severity; a change is an event in `severity_history`.

    Every message and summary reads `severity` (the current level); the history says who (which
    runbook) moved it, from what, to what, when and why. Setting the current level again is a no-op.
    """
    from .._time import iso_z

    with edit_index(folder) as index:
        history = index.setdefault("severity_history", [])
        current = index.get("severity")
        if not (current == level and history):
            history.append({"at": iso_z(), "by": by, "from": current, "to": level, "why": why})
            index["severity"] = level
    return index


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself (no lock file to clutter the record)."""
    import fcntl

    with _LOCK:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def newest(root: str | Path) -> Path | None:
    """The newest incident folder (one with an index) under `root`; folder names start with a UTC stamp."""
    try:
        names = sorted((e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
                        and os.path.exists(os.path.join(e.path, INDEX))), reverse=True)
    except FileNotFoundError:
        return None
    return Path(root) / names[0] if names else None


def span(index: dict[str, Any]) -> tuple[float | None, float | None]:
    """The response's start and end as epoch seconds (None where the index does not say)."""
    from .._time import epoch

    return epoch(index.get("started_at")), epoch(index.get("finished_at"))

