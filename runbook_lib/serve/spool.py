"""What `runbook serve` must not lose: accepted alerts and which incident each fingerprint has.

An alert is written to the spool (temporary file, fsync, rename) *before* the webhook is answered,
and removed only once handled, so a crash or restart between the two replays it instead of
dropping it. The fingerprint map (`incidents.json`) says which incident folder an ongoing alert
belongs to, so later notifications are appended there rather than opening a second incident.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

OPEN, RESOLVED = "open", "resolved"


def write_atomic(path: Path, data: Any) -> None:
    """Temporary file, fsync, rename: after a crash the file is either whole or absent."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Spool:
    """A folder of accepted, not yet handled jobs; names sort in arrival order."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "spool"
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, job: dict[str, Any]) -> Path:
        path = self.dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self._write(path, job)
        return path

    def note(self, path: Path, **fields: Any) -> None:
        """Add `fields` to a spooled job (what was decided about it), durably, before acting on it."""
        self._write(path, {**(self.load(path) or {}), **fields})

    def _write(self, path: Path, job: dict[str, Any]) -> None:
        write_atomic(path, job)
        try:  # the rename itself must survive a power cut too
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def pending(self) -> list[Path]:
        """Jobs left by an earlier run (or not yet handled), oldest first."""
        return sorted(p for p in self.dir.glob("*.json") if not p.name.startswith("."))

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        try:
            value = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def writable(self) -> bool:
        probe = self.dir / f".probe-{os.getpid()}"
        try:
            probe.write_text("ok")
            probe.unlink()
            return True
        except OSError:
            return False


class IncidentMap:
    """fingerprint -> {id, folder, state, alert, opened_at, joined, service}; persisted on every change.

    Several fingerprints map to one incident when alerts were correlated (`joined`).
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "incidents.json"
        self._lock = threading.Lock()
        try:
            loaded = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            loaded = {}
        self._data: dict[str, dict[str, Any]] = loaded if isinstance(loaded, dict) else {}

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._data.get(fingerprint)
            return dict(entry) if entry else None

    def open_entry(self, fingerprint: str) -> dict[str, Any] | None:
        entry = self.get(fingerprint)
        return entry if entry and entry.get("state") == OPEN else None

    def newest_open(self, service: str = "") -> dict[str, Any] | None:
        """The most recently opened incident of `service` that still has a firing alert (what a new alert
        of that service joins); `service` is the label map's key ("" for alerts without service labels)."""
        with self._lock:
            opened = [e for e in self._data.values()
                      if e.get("state") == OPEN and e.get("id") and e.get("service", "") == service]
            return dict(max(opened, key=lambda e: str(e.get("opened_at") or ""))) if opened else None

    def open_for(self, incident_id: str) -> dict[str, dict[str, Any]]:
        """fingerprint -> entry for the alerts of `incident_id` still firing."""
        with self._lock:
            return {fp: dict(e) for fp, e in self._data.items() if e.get("id") == incident_id and e.get("state") == OPEN}

    def set(self, fingerprint: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            entry = {**self._data.get(fingerprint, {}), **fields}
            self._data[fingerprint] = entry
            write_atomic(self.path, self._data)
            return dict(entry)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._data.items()}
