"""serve's respond runs: started in their own session holding the incident's run lock, waited for
within the run timeout, adopted when a previous serve left one running, killed on stop.

The caller claims an incident first (one run per incident at a time); `Responder.run` then either
starts respond or, when the incident's run lock is still held by a respond from a previous serve
(it outlived a kill -9), waits for that one instead of starting a second (owned.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._time import iso_z as _now
from ..records.incident import read_index, update_index
from .alerts import Alert
from .config import ServeConfig
from .metrics import ServeMetrics
from .owned import RunLocks, kill_group, proc_start_ticks

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
        self.pool = StandbyPool(config, log) if config.warm > 0 else None  # started by start()

    def start(self) -> None:
        """serve is up (its state directory is ours): pre-start the standbys (`--warm`)."""
        if self.pool is not None:
            self.pool.start()

    def problems(self) -> list[str]:
        return []

    def running(self) -> int:
        return len(self.procs) + len(self.adopted)

    def kill_all(self) -> None:
        """Stop: kill every run's process group, ours and adopted ones (their jobs stay spooled), and end the
        standbys that had no job yet (with their kernels)."""
        if self.pool is not None:
            self.pool.stop()
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
                proc: subprocess.Popen[bytes] | None = None
                if self.pool is not None:  # a standby runs the same respond, with the lock and log handed over
                    proc = self.pool.hand(cmd[len(self.config.command):], lock_fd, log.fileno(), incident_id)
                if proc is None:
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
        if self.pool is not None:
            self.pool.run_started()  # warm or cold: a burst is on, the next standbys wait for its end
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


REFILL_QUIET_S = 3.0  # no standby starts within this of a respond's start: a burst's runs keep the cores
BOOT_AT_ONCE = 2  # standbys booting at the same time (each ~1.3 CPU-seconds)
BOOT_WAIT_S = 5.0  # a job with no standby ready waits this long for a booting one, then starts cold
BOOT_TIMEOUT_S = 120.0  # a standby not ready by then is killed and replaced
STOP_WAIT_S = 10.0  # at stop, standbys end their kernels themselves within this, else are killed


class Standby:
    """One pre-started responder (run/standby.py) as serve sees it: its process, socket and kernel."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc, self.sock, self.started = proc, sock, time.monotonic()
        self.kernel_pid: int | None = None
        self.kernel_ticks: int | None = None
        self.ready_at = 0.0


class StandbyPool:
    """`serve --warm N`: N standbys kept ready (imports done, a fresh kernel each), each used for one incident.

    Refilled by one thread: a standby that exits or dies (its kernel died, it ran out of idle time) is
    replaced; a new one starts only when no respond started (warm or cold) for `REFILL_QUIET_S` (a
    burst's runs are not slowed by the next standbys' start-up) and at most `BOOT_AT_ONCE` boot together. A job
    finding none ready waits up to `BOOT_WAIT_S` for a booting one, else starts a cold respond.
    """

    def __init__(self, config: ServeConfig, log: Callable[[str], None]) -> None:
        self.config, self.log, self.size = config, log, config.warm
        self.ready: list[Standby] = []
        self.booting: list[Standby] = []
        self._retired: list[socket.socket] = []  # handed over: closed by the maintainer (it may be selecting on them)
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._last_start = -REFILL_QUIET_S
        self._thread = threading.Thread(target=self._maintain, name="serve-standbys", daemon=True)

    def start(self) -> None:
        try:
            (self.config.state / "standby.log").touch()  # there from the start (what the standbys said)
        except OSError:
            pass
        self._thread.start()

    def run_started(self) -> None:
        """A respond started (through a standby or cold): no standby starts within `REFILL_QUIET_S` of it."""
        with self._cond:
            self._last_start = time.monotonic()

    def _spawn(self) -> Standby | None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k != self.config.token_env}  # as a cold respond's
        cmd = [*self.config.command, "_standby", "--serve", str(self.config.output_dir)]
        try:
            with open(self.config.state / "standby.log", "ab") as log:
                proc = subprocess.Popen(cmd, stdin=child, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        except OSError as exc:
            parent.close()
            self.log(f"a standby could not be started: {exc.strerror or exc}; runs start cold meanwhile")
            return None
        finally:
            child.close()
        return Standby(proc, parent)

    def _maintain(self) -> None:
        while not self._stopped.is_set():
            with self._cond:
                for sock in self._retired:
                    sock.close()
                self._retired.clear()
                watched = {s.sock.fileno(): s for s in [*self.booting, *self.ready]}
            try:
                readable = select.select(list(watched), [], [], 0.25)[0] if watched else []
            except (OSError, ValueError):
                readable = []
            if not watched:
                self._stopped.wait(0.25)
            with self._cond:
                for fd in readable:
                    self._message(watched[fd])
                for s in [*self.booting, *self.ready]:
                    if s.proc.poll() is not None:
                        self._drop(s, f"exited {s.proc.returncode}; replaced")
                    elif s in self.booting and time.monotonic() - s.started > BOOT_TIMEOUT_S:
                        self._drop(s, f"not ready within {BOOT_TIMEOUT_S:g} s; killed and replaced")
                self._refill()
                self._cond.notify_all()

    def _message(self, s: Standby) -> None:
        if s not in self.booting and s not in self.ready:
            return
        try:
            msg = s.sock.recv(256, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if msg.startswith(b"ready ") and s in self.booting:
            s.kernel_pid = int(msg.split()[1])
            s.kernel_ticks = proc_start_ticks(s.kernel_pid)
            s.ready_at = time.monotonic()
            self.booting.remove(s)
            self.ready.append(s)
        elif not msg:  # it closed its socket: exiting (its log says why)
            try:
                code: int | None = s.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            self._drop(s, f"exited {code}; replaced" if code is not None else "closed its socket; replaced")

    def _drop(self, s: Standby, why: str) -> None:
        for group in (self.booting, self.ready):
            if s in group:
                group.remove(s)
        self.log(f"standby pid {s.proc.pid} {why} (see {self.config.state / 'standby.log'})")
        _end_standby(s, wait_s=0)
        self._retired.append(s.sock)

    def _refill(self) -> None:
        if self._stopped.is_set() or time.monotonic() - self._last_start < REFILL_QUIET_S:
            return
        while len(self.ready) + len(self.booting) < self.size and len(self.booting) < BOOT_AT_ONCE:
            s = self._spawn()
            if s is None:
                return
            self.booting.append(s)

    def hand(self, args: list[str], lock_fd: int, log_fd: int, incident_id: str) -> subprocess.Popen[bytes] | None:
        """Give one ready standby this respond (`args`, as after the program) with the run lock and the log;
        its process, or None when none is ready within `BOOT_WAIT_S` (the caller starts a cold respond)."""
        deadline = time.monotonic() + BOOT_WAIT_S
        while True:
            with self._cond:
                while not self.ready:
                    left = deadline - time.monotonic()
                    if self._stopped.is_set() or not self.booting or left <= 0:
                        return None
                    self._cond.wait(min(left, 0.5))
                s = self.ready.pop(0)
                self._last_start = time.monotonic()
            try:
                socket.send_fds(s.sock, [json.dumps({"argv": args}).encode()], [lock_fd, log_fd])
            except OSError as exc:  # it died since it said ready: the next one, or cold
                with self._cond:
                    self._drop(s, f"could not take {incident_id} ({exc.strerror or exc})")
                continue
            with self._cond:
                self._retired.append(s.sock)
            self.log(f"{incident_id}: respond handed to standby pid {s.proc.pid} (kernel pid {s.kernel_pid}, "
                     f"ready for {time.monotonic() - s.ready_at:.0f} s)")
            return s.proc

    def stop(self) -> None:
        """End every standby without a job: its socket closed (it stops its kernel and exits), killed
        with its kernel after `STOP_WAIT_S`."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._cond:
            left, self.ready, self.booting = [*self.ready, *self.booting], [], []
            for sock in self._retired:
                sock.close()
            self._retired.clear()
            self._cond.notify_all()
        for s in left:
            s.sock.close()
        deadline = time.monotonic() + STOP_WAIT_S
        for s in left:
            _end_standby(s, wait_s=max(0.0, deadline - time.monotonic()))


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (/proc), e.g. a standby's kernel (which leads its own session)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _end_standby(s: Standby, wait_s: float) -> None:
    """Wait up to `wait_s` for a standby to end by itself, then SIGKILL it and its kernel (named by pid and
    start time, never a recycled pid)."""
    try:
        s.proc.wait(timeout=wait_s) if wait_s > 0 else None
    except subprocess.TimeoutExpired:
        pass
    kernels = {k: proc_start_ticks(k) for k in _children(s.proc.pid)} if s.proc.poll() is None else {}
    if s.kernel_pid and s.kernel_ticks is not None:
        kernels.setdefault(s.kernel_pid, s.kernel_ticks)
    kill_proc_group(s.proc)
    for pid, ticks in kernels.items():
        if ticks is not None and proc_start_ticks(pid) == ticks:
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
