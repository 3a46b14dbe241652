"""`runbook serve`: Alertmanager webhooks in, incident records out.

Each firing Mistral alert starts `runbook respond` headless (in its own process, so a stuck or
crashed run is killed on a deadline without taking the server down). Alerts are keyed on their
fingerprint: the first firing opens an incident folder, later notifications for the same
fingerprint are appended to it, and the `resolved` notification marks it resolved. Jobs for one
fingerprint run strictly in order; different fingerprints run concurrently up to `workers`.

One fault usually fires several rules (5xx raise both MistralServerErrors and MistralErrorRateHigh).
With `correlate` (the default), a Mistral alert that starts firing while an incident of the SAME
SERVICE opened by serve is still firing joins that incident instead of opening another (no second
respond run); the incident is marked resolved when the last of its alerts resolves. A service is
the alert's values of the label map's `service_labels` (labelmap.py): two services' alerts make two
incidents. `correlate=False` gives one incident per fingerprint. The label map also turns an
alert's labels into that service's runbook parameters (namespace, label_selector, ...).

Routes: POST /webhook (also /), GET /healthz, GET /readyz, GET /metrics; over HTTPS with `tls_cert`
and `tls_key`. Without a token, serve listens on loopback only unless `insecure` (anyone who can reach
it could start runs and choose their labels).
"""

from __future__ import annotations

import base64
import hmac
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._signals import wait_for_stop_signal
from .._time import iso_z as _now, utc_stamp
from ..errors import ParameterError
from ..records.incident import edit_index, read_index, write_index
from ..run.execute import new_record_dir
from . import alerts as _alerts
from .config import DEFAULT_PORT, DEFAULT_TOKEN_ENV, ServeConfig, check_exposure, is_loopback, tls_context
from .history import recorded
from .http import HttpServer, Request, Response
from .metrics import ServeMetrics
from .owned import RunLocks, StateLock
from .dispatch import dispatcher_for
from .runner import RunNotStarted
from .spool import OPEN, RESOLVED, IncidentMap, Spool

__all__ = ["DEFAULT_PORT", "DEFAULT_TOKEN_ENV", "AlertServer", "ServeConfig", "check_exposure", "is_loopback",
           "serve", "tls_context"]



@dataclass
class _Job:
    path: Path
    alert: _alerts.Alert
    received_at: str
    opened: dict[str, Any] | None = None  # the incident this job was opening when serve last stopped
    attempts: int = 0  # failed attempts so far (retried with backoff while serve runs)
    not_before: float = 0.0  # time.monotonic() before which it is not retried


RETRY_MAX_S = 60.0  # backoff between attempts of a failing job: 1, 2, 4 ... 60 s


class AlertServer(HttpServer):
    """The webhook receiver plus its worker pool."""

    def __init__(self, config: ServeConfig, *, log: Any = None) -> None:
        super().__init__(config.host, config.port)
        self.config = config
        self.max_body_bytes = config.max_body_bytes
        self.max_connections = config.max_connections
        self.header_timeout_s = config.header_timeout_s
        self.body_timeout_s = config.body_timeout_s
        self.lock = StateLock(config.state)
        self.spool = Spool(config.state)
        self.incidents = IncidentMap(config.state)
        self.runs = RunLocks(config.state)
        self.metrics = ServeMetrics()
        self._log_stream = log or sys.stderr
        self._pending: list[_Job] = []
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self.responder = dispatcher_for(config, self.metrics, self.runs, self.log)  # local or kubernetes
        self._slots = threading.Semaphore(self.responder.slots)  # respond runs (or Jobs followed) at once
        self._runs_waiting = 0  # run threads waiting for a slot (guarded by _cond)
        self._run_threads: set[threading.Thread] = set()
        self._failing: dict[str, str] = {}  # spool job name -> why its last attempt failed
        self.metrics.queued.set_function(self.queued)
        self.metrics.spool_jobs.set_function(lambda: len(self.spool.pending()))
        self.metrics.oldest_age.set_function(self.spool.oldest_age)
        self._active: set[str] = set()  # incident ids with a respond starting or running (guarded by _cond)
        self._assign_lock = threading.Lock()  # find-or-open of an incident is one step
        self._ready = False
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> AlertServer:
        """Check the exposure and TLS options, replay the spool, bind, start the workers.

        ParameterError (naming the option) before anything is bound or read for a refused set-up.
        """
        check_exposure(self.config)
        self.ssl_context = tls_context(self.config)
        Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
        self.lock.acquire()  # StateDirInUse (naming the holder's pid) while another serve owns this state
        self.incidents = IncidentMap(self.config.state)  # read under the lock: the last holder's final word
        swept = self.spool.sweep_leftovers()  # half-written files of a crashed predecessor
        self.runs.sweep()
        self.spool.load_seen()
        try:
            recovered = self._recover()  # queued before the first webhook can be: replayed jobs keep their order
            super().start()
        except OSError as exc:
            self.lock.release()
            raise ParameterError("--listen", f"{self.config.host}:{self.config.port}",
                                 f"an address this host can listen on ({exc.strerror or exc})") from None
        except BaseException:
            self.lock.release()
            raise
        if hasattr(self.responder, "start"):
            self.responder.start()  # --warm: the standbys start booting
        for i in range(max(1, self.config.workers)):
            t = threading.Thread(target=self._work, name=f"serve-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._ready = True
        token = "on (bearer/basic, from $" + self.config.token_env + ")" if self._token() else "off"
        if not self._token() and not is_loopback(self.config.host):
            token += " (--insecure: anyone who reaches this address can start runs)"
        lm = self.config.label_map
        self.log(f"listening on {self.url}/webhook; workers {self.config.workers}, queue {self.config.queue_max}, "
                 f"auth {token}, records in {self.config.output_dir}; a service is "
                 f"({', '.join(lm.service_labels)}), parameters from labels: "
                 f"{', '.join(sorted(lm.parameters)) or 'none'}{' (' + lm.source + ')' if lm.source else ''}"
                 + (f"; {recovered} job(s) recovered from the spool" if recovered else "")
                 + (f"; {swept} temporary file(s) of a crash removed" if swept else ""))
        return self

    def close(self) -> None:
        """Stop accepting, let running responds finish within `grace_s`, then kill them.

        Unfinished jobs stay in the spool and are replayed by the next start.
        """
        self._ready = False
        self.stop()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + self.config.grace_s
        for t in [*self._workers, *list(self._run_threads)]:
            t.join(max(0.0, deadline - time.monotonic()))
        self.responder.kill_all()
        for t in [*self._workers, *list(self._run_threads)]:
            t.join(5)
        self._workers.clear()
        self.lock.release()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recover(self) -> int:
        jobs = 0
        for path in self.spool.pending():
            data = self.spool.load(path)
            if not data or not isinstance(data.get("alert"), dict):
                self.log(f"spool: unreadable job {path.name}, moved aside")
                path.rename(path.with_suffix(".bad"))
                continue
            opened = data.get("opened") if isinstance(data.get("opened"), dict) else None
            self._enqueue(_Job(path, _alerts.Alert.from_dict(data["alert"]), str(data.get("received_at", "")),
                               opened))
            jobs += 1
        return jobs

    # -- HTTP ------------------------------------------------------------------------------
    def too_large(self) -> Response:
        self.metrics.webhooks.labels("too_large").inc()
        return Response.json(413, {"error": f"payload over {self.max_body_bytes} bytes; "
                                            "lower max_alerts in the webhook_config or raise --max-bytes"})

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET" and path in ("/healthz", "/-/healthy"):
            return Response.json(200, {"status": "ok"})
        if request.method == "GET" and path in ("/readyz", "/-/ready"):
            problems = self.readiness_problems()
            return Response.json(503 if problems else 200, {"ready": not problems, "problems": problems,
                                                            "queued": self.queued(), "running": self.responder.running()})
        if request.method == "GET" and path == "/metrics":
            return Response(200, self.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
        if path in ("/webhook", "/"):
            if request.method != "POST":
                return Response.json(405, {"error": "POST an Alertmanager webhook payload here"},
                                     headers={"Allow": "POST"})
            return self._webhook(request)
        return Response.json(404, {"error": f"no route {path}; routes: POST /webhook, GET /healthz, "
                                            "/readyz, /metrics"})

    def precheck(self, method: str, path: str, headers: Any, client: str) -> Response | None:
        """Credentials and Content-Type of a webhook, from its headers, before its body is read."""
        if method != "POST" or (path.rstrip("/") or "/") not in ("/webhook", "/"):
            return None
        if not self._authorised(headers.get("Authorization") or ""):
            self.metrics.webhooks.labels("unauthorized").inc()
            self.log(f"webhook from {client}: refused, missing or wrong credentials")
            return Response.json(401, {"error": "missing or wrong credentials (Authorization: Bearer <token>)"},
                                 headers={"WWW-Authenticate": 'Bearer realm="runbook serve"'})
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.metrics.webhooks.labels("rejected").inc()
            return Response.json(415, {"error": f"Content-Type must be application/json, got {ctype or 'none'!r}"})
        return None

    def too_slow(self) -> Response:
        self.metrics.webhooks.labels("too_slow").inc()
        return super().too_slow()

    def over_capacity(self) -> None:
        self.metrics.connections_refused.labels("over_capacity").inc()

    def header_timed_out(self) -> None:
        self.metrics.connections_refused.labels("header_timeout").inc()

    def handler_failed(self, request: Request, exc: Exception) -> Response:
        """A bug in serve's own handling: logged with its reason and counted, answered 500 with the type."""
        self.metrics.webhooks.labels("error").inc()
        self.log(f"{request.method} {request.path} from {request.client}: internal error {type(exc).__name__}: {exc}")
        return Response.json(500, {"error": f"internal error ({type(exc).__name__}); see serve's log"})

    def readiness_problems(self) -> list[str]:
        problems = []
        if not self._ready:
            problems.append("not started or shutting down")
        if not all(t.is_alive() for t in self._workers):
            problems.append("a worker thread died")
        if not self.spool.writable():
            problems.append(f"spool {self.spool.dir} is not writable")
        if self.queued() >= self.config.queue_max:
            problems.append("queue full")
        problems += self.responder.problems()  # e.g. the Kubernetes API unreachable (--dispatch kubernetes)
        failing = dict(self._failing)
        if failing:
            problems.append(f"{len(failing)} job(s) failing, retried with backoff; last: {list(failing.values())[-1]}")
        return problems

    def _webhook(self, request: Request) -> Response:
        refused = self.precheck(request.method, request.path, request.headers, request.client)
        if refused is not None:  # the HTTP layer asks first; checked again for callers of handle()
            return refused
        try:
            note = _alerts.parse(request.body)
        except _alerts.PayloadError as exc:
            self.metrics.webhooks.labels("rejected").inc()
            self.log(f"webhook from {request.client}: refused, {exc}")
            return Response.json(400, {"error": str(exc)})
        ours = [a for a in note.alerts if _alerts.is_mistral(a)]
        for a in note.alerts:
            if a not in ours:
                self.metrics.alerts.labels(a.status, "ignored").inc()
        with self._cond:
            # a webhook is taken whole (up to alerts.MAX_ALERTS) while the queue is not full: one big
            # group must not be refused forever because it is bigger than --queue-max
            received = _now()
            fresh: list[tuple[_alerts.Alert, str]] = []
            retried: list[_alerts.Alert] = []
            for a in ours:  # Alertmanager retrying a notification we already took: acknowledged, not recorded again
                key = _alerts.retry_key(note.group_key, a)
                if self.spool.seen(key) or key in {k for _, k in fresh}:
                    retried.append(a)
                else:
                    fresh.append((a, key))
            duplicates = len(retried)
            if fresh and self.queued() >= self.config.queue_max:  # a pure retry needs no room: answered 200
                self.metrics.webhooks.labels("queue_full").inc()
                return Response.json(503, {"error": f"queue full ({self.config.queue_max} jobs); retry later"},
                                     headers={"Retry-After": "30"})
            try:  # persisted, all or none, before the answer: a crash after this replays them
                paths = self.spool.put_all([{"alert": a.to_dict(), "received_at": received, "receiver": note.receiver,
                                             "key": key} for a, key in fresh]) if fresh else []
            except OSError as exc:
                self.metrics.webhooks.labels("spool_error").inc()
                self.log(f"webhook from {request.client}: refused with 503, the spool {self.spool.dir} cannot be "
                         f"written ({exc.strerror or exc}); nothing of it was kept, Alertmanager will retry")
                return Response.json(503, {"error": f"cannot persist the alerts ({exc.strerror or type(exc).__name__}); "
                                                    "nothing was accepted, retry later"},
                                     headers={"Retry-After": "30"})
            for (a, _key), path in zip(fresh, paths):
                self._enqueue(_Job(path, a, received))
        try:
            self.spool.remember([key for _, key in fresh])
        except OSError as exc:  # the jobs are spooled; only retry detection after they are handled is lost
            self.log(f"webhook: could not note {len(fresh)} accepted key(s) in {self.spool.seen_log} "
                     f"({exc.strerror or exc}); a retry of this webhook after it is handled would be recorded twice")
        self.metrics.webhooks.labels("accepted").inc()
        for a in retried:
            self.metrics.alerts.labels(a.status, "retry").inc()
        self.log(f"webhook: {note.status}, {len(fresh)} Mistral alert(s) accepted"
                 + (f", {duplicates} already accepted (a retry)" if duplicates else "")
                 + f", {len(note.alerts) - len(ours)} other(s) ignored")
        answer = {"accepted": len(fresh), "ignored": len(note.alerts) - len(ours), "queued": self.queued()}
        if duplicates:
            answer["duplicates"] = duplicates
        return Response.json(200, answer)

    def _token(self) -> str:
        return os.environ.get(self.config.token_env, "")

    def _authorised(self, header: str) -> bool:
        token = self._token()
        if not token:
            return True
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.encode(), token.encode())

    # -- queue -----------------------------------------------------------------------------
    def queued(self) -> int:
        """Accepted jobs waiting for a worker plus respond runs waiting for a slot."""
        return len(self._pending) + self._runs_waiting

    def _enqueue(self, job: _Job, *, first: bool = False) -> None:
        with self._cond:
            if first:
                self._pending.insert(0, job)
            else:
                self._pending.append(job)
            self._cond.notify()

    def _take(self) -> _Job | None:
        """The oldest job whose fingerprint is not being handled or backing off: one fingerprint, one job
        at a time, in order (a failed job is put back first and holds its fingerprint's later jobs)."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                now, blocked, wait = time.monotonic(), set(), 0.5
                for i, job in enumerate(self._pending):
                    fp = job.alert.fingerprint
                    if fp in self._busy or fp in blocked:
                        continue
                    if job.not_before > now:
                        blocked.add(fp)
                        wait = min(wait, job.not_before - now)
                        continue
                    self._busy.add(fp)
                    del self._pending[i]
                    return job
                self._cond.wait(max(0.01, wait))

    def _work(self) -> None:
        while (job := self._take()) is not None:
            try:
                run = self.handle_job(job)
                if run is None:
                    self.spool.done(job.path)
                    self._succeeded(job)
                else:  # the respond runs on its own thread: later notifications of this alert go on meanwhile
                    self._start_run(job, *run)
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker; retried with backoff
                self._failed(job, "handle", exc)
                self._enqueue(job, first=True)
            finally:
                with self._cond:
                    self._busy.discard(job.alert.fingerprint)
                    self._cond.notify_all()

    def _failed(self, job: _Job, stage: str, exc: BaseException) -> float:
        """Count and log a failed attempt; the job's next attempt waits 1, 2, 4 ... RETRY_MAX_S seconds."""
        job.attempts += 1
        delay = min(RETRY_MAX_S, 2.0 ** (job.attempts - 1))
        job.not_before = time.monotonic() + delay
        reason = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        self._failing[job.path.name] = f"{job.alert.name} ({stage}): {reason}"
        self.metrics.job_failures.labels(stage).inc()
        self.log(f"job {job.path.name} ({job.alert.name}, {stage}) failed, attempt {job.attempts}: {reason}; "
                 f"retrying in {delay:g} s (it stays in the spool)")
        return delay

    def _succeeded(self, job: _Job) -> None:
        if self._failing.pop(job.path.name, None) is not None:
            self.log(f"job {job.path.name} ({job.alert.name}) done after {job.attempts} failed attempt(s)")

    def _start_run(self, job: _Job, incident_id: str, folder: Path, alert: _alerts.Alert) -> None:
        """Hand a claimed incident's respond to a run thread; its job leaves the spool when the run ends."""
        with self._cond:
            self._runs_waiting += 1
        t = threading.Thread(target=self._run_thread, args=(job, incident_id, folder, alert),
                             name=f"serve-run-{incident_id}", daemon=True)
        self._run_threads.add(t)
        t.start()

    def _run_thread(self, job: _Job, incident_id: str, folder: Path, alert: _alerts.Alert) -> None:
        waiting = True
        try:
            while not self._slots.acquire(timeout=0.5):  # at most `workers` responds at once
                if self._closing:
                    return  # left spooled: the next start runs it
            with self._cond:
                self._runs_waiting -= 1
            waiting = False
            try:
                while True:
                    try:
                        self.responder.run(incident_id, folder, alert, lambda: self._closing,
                                           lambda: self._succeeded(job))  # started: not failing
                        break
                    except RunNotStarted as exc:
                        end = time.monotonic() + self._failed(job, "run", exc)
                        while time.monotonic() < end:
                            if self._closing:
                                return
                            time.sleep(0.1)
                        if (read_index(folder) or {}).get("status") not in ("queued", "running"):
                            break  # finished meanwhile
            finally:
                self._slots.release()
            self.spool.done(job.path)
            self._succeeded(job)
        except Exception as exc:  # noqa: BLE001 - e.g. stopped during the run: it stays spooled
            if not self._closing:
                self._failed(job, "run", exc)
            self.log(f"{incident_id}: {type(exc).__name__}: {exc}; the job stays in the spool for the next start")
        finally:
            with self._cond:
                if waiting:
                    self._runs_waiting -= 1
                self._active.discard(incident_id)
            self._run_threads.discard(threading.current_thread())

    # -- handling --------------------------------------------------------------------------
    def handle_job(self, job: _Job) -> tuple[str, Path, _alerts.Alert] | None:
        """Apply one notification to the records now; for a respond to run, the claimed (id, folder, alert)."""
        alert = job.alert
        if alert.status == _alerts.FIRING:
            entry, how = self._replayed(job) or self._assign(job)
            if how == "new":
                self.metrics.alerts.labels(alert.status, "new_incident").inc()
                self.log(f"{entry['id']}: {alert.name} firing ({alert.fingerprint}); running respond into "
                         f"{entry['folder']}")
                return entry["id"], Path(entry["folder"]), alert
            self._append(entry, job)
            self.metrics.alerts.labels(alert.status, how).inc()
            if how == "joined":
                self.log(f"{entry['id']}: {alert.name} firing ({alert.fingerprint}) joins this open incident")
            index = read_index(entry["folder"]) or {}
            if index.get("status") in ("queued", "running") and self._claim(entry["id"]):
                self.log(f"{entry['id']}: respond did not finish before the last stop; running it again "
                         "(or adopting it, if it still runs)")
                return entry["id"], Path(entry["folder"]), alert
            return None
        with self._assign_lock:  # two alerts of one incident resolving at once: exactly one marks it
            self._resolve(job)
        return None

    def _replayed(self, job: _Job) -> tuple[dict[str, Any], str] | None:
        """A replayed job that had opened an incident belongs to it, even if its alert resolved meanwhile
        (the resolve was applied while the run went on, then serve stopped)."""
        opened = job.opened or {}
        folder = Path(str(opened.get("folder") or ""))
        if not opened.get("id") or not folder.is_dir():
            return None
        index = read_index(folder)
        if not index or (index.get("alert") or {}).get("fingerprint") != job.alert.fingerprint:
            return None
        if self.incidents.get(job.alert.fingerprint) is None:
            return None  # stopped before the map knew it: _assign finishes the opening in that folder
        return {"id": str(index.get("id") or opened["id"]), "folder": str(folder)}, "replayed"

    def _resolve(self, job: _Job) -> None:
        alert = job.alert
        entry = self.incidents.open_entry(alert.fingerprint)
        if entry is None:
            self.metrics.alerts.labels(alert.status, "ignored").inc()
            self.log(f"resolved {alert.name} ({alert.fingerprint}): no open incident for it, nothing to mark")
            return
        self._append(entry, job)
        still = sorted(e.get("alert") or fp for fp, e in self.incidents.open_for(entry["id"]).items()
                       if fp != alert.fingerprint)
        if still:
            self.incidents.set(alert.fingerprint, state=RESOLVED, resolved_at=_resolved_at(alert))
            self.metrics.alerts.labels(alert.status, "still_firing").inc()
            self.log(f"{entry['id']}: {alert.name} resolved at {_resolved_at(alert)}; still firing: "
                     f"{', '.join(still)}")
            return
        with edit_index(entry["folder"]) as index:
            index["alert_state"] = RESOLVED
            index["resolved"] = {"at": _resolved_at(alert), "notified_at": job.received_at, "by": "alertmanager",
                                 "alert": alert.name, "fingerprint": alert.fingerprint}
            # the incident's lifecycle follows: resolved, unless its response is still running (respond
            # then ends it as resolved itself when it sees alert_state)
            if index.get("status") not in ("queued", "running"):
                index["status"] = "resolved"
                index.setdefault("resolved_at", _resolved_at(alert))
        self.incidents.set(alert.fingerprint, state=RESOLVED, resolved_at=_resolved_at(alert))
        self.metrics.alerts.labels(alert.status, "resolved").inc()
        self.log(f"{entry['id']}: {alert.name} resolved at {_resolved_at(alert)}; incident marked resolved")

    def _assign(self, job: _Job) -> tuple[dict[str, Any], str]:
        """The incident a firing alert belongs to, and how: "appended", "joined" or "new" (registered here)."""
        alert = job.alert
        with self._assign_lock:
            entry = self.incidents.open_entry(alert.fingerprint)
            if entry is not None:
                return entry, "appended"
            label_map = self.config.label_map
            service = label_map.service_key(alert.labels)
            other = self.incidents.newest_open(service) if self.config.correlate else None
            if other is not None:
                entry = self.incidents.set(alert.fingerprint, id=other["id"], folder=other["folder"], state=OPEN,
                                           alert=alert.name, opened_at=_now(), joined=True, service=service)
                return entry, "joined"
            incident_id, folder = self._new_folder(job)
            mapped, skipped = label_map.parameters_for(alert.labels)
            write_index(folder, {"id": incident_id, "folder": ".", "status": "queued",
                                 "source": "alertmanager",
                                 "alert": {"name": alert.name, "fingerprint": alert.fingerprint,
                                           "error_class": alert.error_class, "runbook": alert.runbook,
                                           "severity_label": alert.labels.get("severity"),
                                           "summary": alert.annotations.get("summary")},
                                 "service": label_map.service(alert.labels),
                                 "parameters_from_labels": mapped,
                                 "parameters_not_mapped": {k: f"alert has no label {', '.join(v)}"
                                                           for k, v in skipped.items()},
                                 "alert_state": "firing", **recorded({}, job.alert, job.received_at, job.path.name)})
            self._claim(incident_id)
            entry = self.incidents.set(alert.fingerprint, id=incident_id, folder=str(folder), state=OPEN,
                                       alert=alert.name, opened_at=_now(), service=service)
            return entry, "new"

    def _new_folder(self, job: _Job) -> tuple[str, Path]:
        """Choose the new incident's id and folder, note them in the job's spool file, then create it.

        Noted first, so a crash in between replays into the same folder instead of opening a second.
        """
        fp = job.alert.fingerprint
        opened = job.opened or {}
        if opened.get("id") and opened.get("folder"):  # replay of a job that was opening an incident
            folder = Path(opened["folder"])
            index = read_index(folder) if folder.is_dir() else None
            if index is None or (index.get("alert") or {}).get("fingerprint") == fp:
                folder.mkdir(parents=True, exist_ok=True)
                return str(opened["id"]), folder
        now = datetime.now(UTC)
        incident_id = f"INC-{utc_stamp(now)}-{fp[:8]}"
        folder = new_record_dir(Path(self.config.output_dir), incident_id, now, before_mkdir=lambda candidate:
                                self.spool.note(job.path, opened={"id": incident_id, "folder": str(candidate)}))
        return incident_id, folder

    def _claim(self, incident_id: str) -> bool:
        """Mark a respond for `incident_id` as starting; False when one is already starting or running."""
        with self._cond:
            if incident_id in self._active:
                return False
            self._active.add(incident_id)
            return True

    def _append(self, entry: dict[str, Any], job: _Job) -> None:
        with edit_index(entry["folder"]) as index:  # under the index lock: concurrent appends all land
            history = (index.get("alert_history") or {}).get(job.alert.fingerprint) or {}
            if history.get("last_job") == job.path.name or any(a.get("job") == job.path.name
                                                                for a in index.get("alerts") or []):
                return  # a replay after a restart: this notification is already recorded
            index.update(recorded(index, job.alert, job.received_at, job.path.name))

    def log(self, message: str) -> None:
        self._log_stream.write(f"{_now()} serve: {message}\n")  # one write: lines of two threads never interleave
        self._log_stream.flush()


def _resolved_at(alert: _alerts.Alert) -> str:
    ends = alert.ends_at
    return ends if ends and not ends.startswith("0001-") else _now()


def serve(config: ServeConfig) -> int:
    """Run until SIGINT/SIGTERM; the CLI's entry point."""
    check_exposure(config)  # refused before anything is created under the output folder
    tls_context(config)
    server = AlertServer(config).start()
    try:
        wait_for_stop_signal()
    finally:
        server.log("stopping: new webhooks refused, running responds get "
                   f"{config.grace_s:g} s, unfinished jobs stay spooled")
        server.close()
    return 0
