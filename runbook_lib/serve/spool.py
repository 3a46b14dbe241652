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


RETRY_WINDOW_S = 600.0  # a notification identical to one accepted this recently is Alertmanager retrying it
SEEN_LOG_COMPACT_BYTES = 1 << 20


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_tmp(path: Path, data: Any) -> Path:
    """`data` as JSON in a temporary file beside `path`, fsynced; removed again if anything fails."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave 0-byte leftovers behind
        raise
    return tmp


def write_atomic(path: Path, data: Any) -> None:
    """Temporary file, fsync, rename: after a crash the file is either whole or absent (never a leftover)."""
    tmp = _write_tmp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Spool:
    """A folder of accepted, not yet handled jobs; names sort in arrival order."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "spool"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seen_log = Path(state_dir) / "accepted.log"
        self._seen: dict[str, float] = {}  # retry key -> when accepted (epoch s)
        self._seen_lock = threading.Lock()

    def put(self, job: dict[str, Any]) -> Path:
        return self.put_all([job])[0]

    def put_all(self, jobs: list[dict[str, Any]]) -> list[Path]:
        """Spool every job or none: all written and fsynced first, then renamed; on any error the
        temporary files and the jobs already renamed are removed and the error raised (the webhook is
        then refused as a whole, so Alertmanager's retry cannot record half of it twice)."""
        paths = [self.dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json" for _ in jobs]
        tmps: list[Path] = []
        done: list[Path] = []
        try:
            for path, job in zip(paths, jobs):
                tmps.append(_write_tmp(path, job))
            for tmp, path in zip(tmps, paths):
                os.replace(tmp, path)
                done.append(path)
            self._sync_dir()
        except BaseException:
            for leftover in [*tmps, *done]:
                leftover.unlink(missing_ok=True)
            raise
        return paths

    def note(self, path: Path, **fields: Any) -> None:
        """Add `fields` to a spooled job (what was decided about it), durably, before acting on it."""
        self._write(path, {**(self.load(path) or {}), **fields})

    def _write(self, path: Path, job: dict[str, Any]) -> None:
        write_atomic(path, job)
        self._sync_dir()

    def _sync_dir(self) -> None:
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

    def oldest_age(self) -> float:
        """Seconds since the oldest spooled job was accepted (names start with its time in ns); 0 if none."""
        names = [p.name for p in self.pending()]
        try:
            return max(0.0, time.time() - int(names[0].split("-")[0]) / 1e9) if names else 0.0
        except ValueError:
            return 0.0

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
            return True
        except OSError:
            return False
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only filesystem refuses even removing nothing

    def sweep_leftovers(self) -> int:
        """Remove temporary files a crash left (a kill -9 between writing and renaming); call it holding
        the state lock, so no writer of ours is alive. Returns how many went."""
        gone = 0
        state = self.dir.parent
        for tmp in [*state.glob(".*.tmp"), *self.dir.glob(".*.tmp"), *(state / "runs").glob(".*.tmp")]:
            try:
                tmp.unlink()
                gone += 1
            except OSError:
                pass
        return gone

    # -- retries: a notification accepted before is recognised -----------------------------------
    def load_seen(self) -> None:
        """Keys accepted within RETRY_WINDOW_S (the log) and of every job still spooled; compacts the log."""
        now = time.time()
        seen: dict[str, float] = {}
        try:
            lines = self.seen_log.read_text("utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            key, _, at = line.partition(" ")
            try:
                if now - float(at) < RETRY_WINDOW_S:
                    seen[key] = float(at)
            except ValueError:
                continue  # a line cut short by a crash
        for path in self.pending():
            key = str((self.load(path) or {}).get("key") or "")
            if key:
                seen[key] = max(seen.get(key, 0.0), now)  # still spooled: recognised for a full window from now
        with self._seen_lock:
            self._seen = seen
            self._rewrite_seen_log()

    def _rewrite_seen_log(self) -> None:
        text = "".join(f"{k} {t:.3f}\n" for k, t in self._seen.items())
        tmp = _tmp_name(self.seen_log)
        try:
            tmp.write_text(text, "utf-8")
            os.replace(tmp, self.seen_log)
        except OSError:
            tmp.unlink(missing_ok=True)  # best effort: the spooled jobs' keys still count

    def seen(self, key: str) -> bool:
        """True when a notification with this retry key was accepted within RETRY_WINDOW_S."""
        with self._seen_lock:
            at = self._seen.get(key)
        return at is not None and time.time() - at < RETRY_WINDOW_S

    def remember(self, keys: list[str]) -> None:
        """Record accepted keys (after their jobs are spooled: a lost line only loses retry detection
        once the job is handled). Raises OSError when the log cannot be appended to."""
        now = time.time()
        with self._seen_lock:
            for key in keys:
                self._seen[key] = now
            for key in [k for k, t in self._seen.items() if now - t >= RETRY_WINDOW_S]:
                del self._seen[key]
            with open(self.seen_log, "a", encoding="utf-8") as fh:
                fh.write("".join(f"{k} {now:.3f}\n" for k in keys))
                fh.flush()
                os.fsync(fh.fileno())
            if self.seen_log.stat().st_size > SEEN_LOG_COMPACT_BYTES:
                self._rewrite_seen_log()


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
        with self._lock:  # on disk first: a failed write (disk full) leaves memory as the disk says
            entry = {**self._data.get(fingerprint, {}), **fields}
            write_atomic(self.path, {**self._data, fingerprint: entry})
            self._data[fingerprint] = entry
            return dict(entry)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._data.items()}
