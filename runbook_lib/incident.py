"""The incident index, `incident.json`: the small file the archive reads instead of notebooks.

One per incident folder, written atomically (temporary file, then rename) so a reader never sees
half of it. `respond` creates it; the evidence and postmortem runbooks add their sections.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

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
    folder = Path(folder)
    tmp = folder / f".{INDEX}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(index, indent=2, default=str) + "\n", "utf-8")
    os.replace(tmp, folder / INDEX)
    return folder / INDEX


def update_index(folder: str | Path, **sections: Any) -> dict[str, Any]:
    """Set top-level `sections` in the folder's index (creating a minimal one if absent)."""
    folder = Path(folder)
    with _LOCK:
        index = read_index(folder) or {"id": folder.name, "folder": str(folder)}
        index.update(sections)
        write_index(folder, index)
    return index
