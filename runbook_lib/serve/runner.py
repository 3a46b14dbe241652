"""serve's respond runs: started in their own session holding the incident's run lock, waited for
within the run timeout, adopted when a previous serve left one running, killed on stop.

The caller claims an incident first (one run per incident at a time); `Responder.run` then either
starts respond or, when the incident's run lock is still held by a respond from a previous serve
(it outlived a kill -9), waits for that one instead of starting a second (owned.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._time import iso_z as _now
from ..records.incident import read_index, update_index
from .alerts import Alert
from .config import ServeConfig
from .metrics import ServeMetrics
from .owned import RunLocks, kill_group

UNFINISHED = ("queued", "running")


def respond_args(config: ServeConfig, alert: Alert, incident_id: str, record_dir: str, output_dir: str, *,
                 run_timeout_s: float | None = None) -> list[str]:
    """`respond`'s arguments for an incident (after the program): its folder, id, and serve's parameters
    with this service's mapped ones winning over -p. The same for a local run and a Kubernetes Job."""
    args = ["respond", "--record-dir", record_dir, "--incident-id", incident_id, "--output-dir", output_dir, "-q"]
    if run_timeout_s is not None:
        args += ["--run-timeout", f"{run_timeout_s:g}"]
    mapped, _ = config.label_map.parameters_for(alert.labels)
    for name, value in {**config.parameters, **mapped}.items():
        args += ["-r", name, value] if isinstance(value, str) else ["-p", name, repr(value)]
    return args


class RunNotStarted(Exception):
    """respond could not be started (its log or process could not be created): retried with backoff."""


class Responder:
    """Runs `runbook respond` for claimed incidents; knows every run of this serve and the adopted ones."""

    def __init__(self, config: ServeConfig, metrics: ServeMetrics, runs: RunLocks, log: Callable[[str], None]) -> None:
        self.config, self.metrics, self.runs, self.log = config, metrics, runs, log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.adopted: dict[str, dict[str, Any]] = {}  # incident id -> run record of a previous serve's run
        self.slots = max(1, config.workers)  # responds at once on this machine

    def problems(self) -> list[str]:
        return []

    def running(self) -> int:
        return len(self.procs) + len(self.adopted)

    def kill_all(self) -> None:
        """Stop: kill every run's process group, ours and adopted ones (their jobs stay spooled)."""
        for proc in list(self.procs.values()):
            kill_proc_group(proc)
        for record in list(self.adopted.values()):
            kill_group(record)

    def run(self, incident_id: str, folder: Path, alert: Alert, closing: Callable[[], bool],
            started: Callable[[], None] = lambda: None) -> None:
        """Run (or adopt) the incident's respond to its end and record a failure; RunNotStarted when it could
        not start, RuntimeError when serve stopped during it (the job then stays spooled)."""
        t0 = time.monotonic()
        lock_fd = self.runs.take(incident_id)
        if lock_fd is not None and (read_index(folder) or {}).get("status") not in UNFINISHED:
            # no respond holds the lock and the record is final: a previous serve's run ended meanwhile
            os.close(lock_fd)
            self.runs.forget(incident_id)
            self.log(f"{incident_id}: its respond (from a previous serve) finished meanwhile; not run again")
            return
        if lock_fd is None:  # a respond from a previous serve still holds this incident's run lock
            failed, reason = self._adopt(incident_id, folder)
        else:
            failed, reason = self._start_and_wait(incident_id, folder, alert, lock_fd, started)
        elapsed = time.monotonic() - t0
        self.metrics.duration.observe(elapsed)
        index = read_index(folder) or {}
        if closing() and index.get("status") in UNFINISHED:
            raise RuntimeError("stopped during the run")  # left unfinished and spooled: run again at next start
        if failed:
            self.metrics.failed.inc()
            if reason.startswith("respond ran over") or index.get("status") in UNFINISHED:
                update_index(folder, status="failed", error=reason, finished_at=_now())
        self.runs.forget(incident_id)
        self.log(f"{incident_id}: respond {'FAILED (' + reason + ')' if failed else 'done'} in {elapsed:.1f} s: "
                 f"{(read_index(folder) or {}).get('verdict') or (read_index(folder) or {}).get('status')}")

    def _start_and_wait(self, incident_id: str, folder: Path, alert: Alert, lock_fd: int,
                        started: Callable[[], None]) -> tuple[bool, str]:
        """Start respond holding the incident's run lock (passed to it), note its pid, wait within the timeout."""
        cmd = [*self.config.command, *respond_args(self.config, alert, incident_id, str(folder),
                                                   str(self.config.output_dir))]
        env = {k: v for k, v in os.environ.items() if k != self.config.token_env}  # kernels never see it
        try:
            with open(folder / "respond.log", "ab") as log:
                # its own group (a timeout kills kernels too), holding the run lock for as long as it lives
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True, pass_fds=(lock_fd,))
        except OSError as exc:
            raise RunNotStarted(f"respond could not be started in {folder}: {exc.strerror or exc}") from None
        finally:
            os.close(lock_fd)  # from now on the lock is the run's alone: held while it lives, whoever waits
        try:
            self.runs.record(incident_id, proc.pid, folder=str(folder), started_epoch=time.time(), started_at=_now())
        except OSError as exc:  # the run lock still guards it; only its pid is not noted for a later serve
            self.log(f"{incident_id}: could not note respond pid {proc.pid} in {self.runs.dir}: {exc.strerror or exc}")
        self.metrics.started.inc()
        self.metrics.running.inc()
        self.procs[incident_id] = proc
        started()
        try:
            code = proc.wait(timeout=self.config.run_timeout_s)
            return code != 0, f"respond exited {code}" if code else ""
        except subprocess.TimeoutExpired:
            kill_proc_group(proc)
            return True, f"respond ran over the {self.config.run_timeout_s:g} s run timeout; killed"
        finally:
            self.procs.pop(incident_id, None)
            self.metrics.running.dec()

    def _adopt(self, incident_id: str, folder: Path) -> tuple[bool, str]:
        """Wait for a respond a previous serve started (it outlived that serve) instead of starting a second;
        kill it at its run timeout, counted from its own start. Its exit code is not ours to read: the
        incident's status says whether it finished."""
        record = self.runs.load(incident_id) or {}
        pid = record.get("pid", "unknown")
        self.log(f"{incident_id}: respond pid {pid} from a previous serve still runs in {folder}; adopting it "
                 "(no second run)")
        self.metrics.adopted.inc()
        self.metrics.running.inc()
        self.adopted[incident_id] = record
        deadline = float(record.get("started_epoch") or time.time()) + self.config.run_timeout_s
        timed_out = False
        try:
            while self.runs.held(incident_id):
                if time.time() > deadline and not timed_out:
                    timed_out = True
                    kill_group(record)
                time.sleep(0.25)
        finally:
            self.adopted.pop(incident_id, None)
            self.metrics.running.dec()
        if timed_out:
            return True, f"respond ran over the {self.config.run_timeout_s:g} s run timeout; killed"
        status = (read_index(folder) or {}).get("status")
        if status in UNFINISHED:
            return True, f"respond pid {pid} (adopted after a restart) ended without finishing its record"
        return False, ""


def kill_proc_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a run we started and its kernels (it leads its own session); bounded wait."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
