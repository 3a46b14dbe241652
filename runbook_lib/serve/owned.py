"""What `runbook serve` owns across its own crashes: its state directory and the runs it started.

One serve per state directory: `StateLock` holds an exclusive `flock` on `<state>/serve.lock` for
the process's life (the kernel drops it when the process dies, even on kill -9), so a second serve
on the same directory is refused with the holder's pid instead of corrupting the first one's map.

A respond run outlives a kill -9 of serve (it runs in its own session so a timeout can kill its
kernels). So that a restarted serve neither starts it a second time nor loses it, every run holds
a lock of its own: serve takes `<state>/runs/<incident>.lock` and hands the locked descriptor to the
respond process (`pass_fds`), then lets go of its own copy. The lock is held exactly as long as that
respond lives, whoever its parent is; a new serve that finds it held adopts the run (waits for it,
then records its outcome) instead of starting another. Beside it, `<incident>.json` records the
pid and the process start time (/proc/<pid>/stat) to name it in logs and to kill its group on the
run timeout without ever hitting a recycled pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from ..errors import RunbookError
from .spool import write_atomic

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class StateDirInUse(RunbookError):
    """Another serve holds the state directory's lock (the CLI prints it and exits 2)."""


def proc_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); None when it
    is gone or a zombie. pid plus start time names one process: a recycled pid has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str:
    """This boot's id: a start time from before a reboot names no process now."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def same_process(record: dict[str, Any]) -> bool:
    """True while the process `record` names (pid, start ticks, boot) is alive."""
    pid, ticks = record.get("pid"), record.get("start_ticks")
    if not isinstance(pid, int) or pid <= 0 or ticks is None or record.get("boot_id", "") != boot_id():
        return False
    return proc_start_ticks(pid) == ticks


def kill_group(record: dict[str, Any]) -> bool:
    """SIGKILL the process group of the run `record` names (respond leads its own session); False if gone."""
    if not same_process(record):
        return False
    try:
        os.killpg(int(record["pid"]), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class StateLock:
    """An exclusive, non-blocking flock on `<state>/serve.lock`, holding the owner's pid."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "serve.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateDirInUse naming the directory and the holder's pid."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            raise StateDirInUse(
                f"state directory {self.dir} is in use by another runbook serve (pid "
                f"{holder[0] if holder else 'unknown'}): one serve per state directory. Stop that one, or give "
                "this one its own --output-dir/--state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {proc_start_ticks(os.getpid())}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RunLocks:
    """Per-incident run locks and pid records under `<state>/runs/`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, incident_id: str, suffix: str) -> Path:
        return self.dir / (_SAFE.sub("_", incident_id) + suffix)

    def take(self, incident_id: str) -> int | None:
        """The incident's run lock, taken (an fd to pass to the run), or None while a run still holds it."""
        fd = os.open(self._path(incident_id, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def held(self, incident_id: str) -> bool:
        """True while some process (a run from this or an earlier serve) holds the incident's run lock."""
        fd = self.take(incident_id)
        if fd is None:
            return True
        os.close(fd)
        return False

    def record(self, incident_id: str, pid: int, **fields: Any) -> dict[str, Any]:
        """Note the run's pid and start time (written before serve waits on it)."""
        record = {"incident": incident_id, "pid": pid, "start_ticks": proc_start_ticks(pid), "boot_id": boot_id(),
                  **fields}
        write_atomic(self._path(incident_id, ".json"), record)
        return record

    def load(self, incident_id: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._path(incident_id, ".json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def forget(self, incident_id: str) -> None:
        """The run ended and its outcome is recorded: drop its pid record (the lock file is reused)."""
        self._path(incident_id, ".json").unlink(missing_ok=True)

    def sweep(self) -> int:
        """At start, under the state lock: drop the lock files of runs that ended (not held, no pid record),
        so they do not pile up one per incident. Returns how many went."""
        gone = 0
        for lock in self.dir.glob("*.lock"):
            if lock.with_suffix(".json").exists():
                continue
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink(missing_ok=True)  # held by us while it goes: no run can be holding it
                gone += 1
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return gone

