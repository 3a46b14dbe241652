"""Where an incident's respond runs: a small registry of dispatchers, chosen by `--dispatch`.

- `local` (the default): a subprocess of serve on this machine (runner.Responder: run locks, adoption
  of a previous serve's run, kill on timeout);
- `kubernetes`: one batch/v1 Job per incident (JobDispatcher below), for when one machine is not
  enough. serve creates the Job, follows it to a verdict within the run timeout and records the
  outcome in incident.json (`dispatch`), and never creates a second Job for one alert: the Job's name
  is derived from the incident's opening alert (fingerprint + startsAt, which Alertmanager sends alike
  to every replica and on every retry), so a create that answers 409 AlreadyExists means "already
  running (or ran)": the Job is adopted and followed, not created again. That is also the reconcile
  after a restart: the spool replays every unfinished incident, its create meets the existing Job.

Every dispatcher offers what the server calls: `run(incident_id, folder, alert, closing)` (blocks
until the run's outcome is recorded; `RunNotStarted` to be retried with backoff, the alert staying
spooled), `running()`, `kill_all()`, `problems()` (for /readyz) and `slots` (runs at once).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from .._time import iso_z as _now
from ..records.incident import edit_index, read_index
from .alerts import Alert
from .config import ServeConfig
from .metrics import ServeMetrics
from .owned import RunLocks
from .runner import UNFINISHED, Responder, RunNotStarted, respond_args

MANAGED_BY = "runbook-serve"
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
INCIDENT_LABEL = "mistral-runbooks/incident"
FINGERPRINT_LABEL = "mistral-runbooks/fingerprint"
FIELD_MANAGER = "runbook-serve"
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
# the same bounds as deploy/kubernetes/job.yaml: one respond = one kernel at a time
RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "64Mi"},
             "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "512Mi"}}
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def job_name(fingerprint: str, starts_at: str) -> str:
    """The Job of one alert episode: the same on every replica and every retry (DNS-1123, 24 chars)."""
    return "runbook-" + hashlib.sha256(f"{fingerprint}\n{starts_at}".encode()).hexdigest()[:16]


def label_value(text: str) -> str:
    """`text` as a valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return _LABEL_BAD.sub("-", text)[:63].strip("-_.")


def job_spec(config: ServeConfig, incident_id: str, folder: Path, alert: Alert, index: dict[str, Any]) -> dict[str, Any]:
    """The batch/v1 Job that runs `runbook respond` for this incident, read-only and bounded."""
    s = config.job
    opening = index.get("alert") or {}
    fp = str(opening.get("fingerprint") or alert.fingerprint)
    starts = str(((index.get("alert_history") or {}).get(fp) or {}).get("starts_at") or alert.starts_at)
    out = (s.output_dir or str(config.output_dir)).rstrip("/")
    run_timeout = int(config.run_timeout_s)
    # respond ends its own run (and writes its record) a little before the pod's deadline kills it
    args = respond_args(config, alert, incident_id, f"{out}/{folder.name}", out,
                        run_timeout_s=max(10, run_timeout - min(60, run_timeout // 10)))
    labels = {"app.kubernetes.io/name": "mistral-runbooks", "app.kubernetes.io/component": "respond",
              "app.kubernetes.io/managed-by": MANAGED_BY, INCIDENT_LABEL: label_value(incident_id),
              FINGERPRINT_LABEL: label_value(fp)}
    container = {
        "name": "respond", "image": s.image, "imagePullPolicy": "IfNotPresent",
        "command": ["runbook"], "args": args,
        "env": [{"name": "MISTRAL_API_KEY", "valueFrom": {"secretKeyRef": {"name": s.api_key_secret,
                                                                             "key": "MISTRAL_API_KEY"}}}],
        "resources": RESOURCES,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/runbook"}],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(fp, starts), "namespace": s.namespace, "labels": labels,
                     "annotations": {"mistral-runbooks/alert": alert.name, "mistral-runbooks/starts-at": starts,
                                     "mistral-runbooks/record": f"{out}/{folder.name}"}},
        "spec": {
            "backoffLimit": 0,  # a failed respond is a finding to read, not to rerun blindly
            "activeDeadlineSeconds": run_timeout,
            "ttlSecondsAfterFinished": s.ttl_s,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": s.service_account, "automountServiceAccountToken": True,
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                                {"name": "home", "emptyDir": {"sizeLimit": "128Mi"}}],
                },
            },
        },
    }


def job_outcome(job: dict[str, Any]) -> tuple[str, str] | None:
    """("succeeded" | "failed", reason) once the Job has ended, else None (from its conditions, as the
    Job controller writes them; the counters as a fallback)."""
    status = job.get("status") or {}
    for c in status.get("conditions") or []:
        if str(c.get("status")) != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded", str(c.get("reason") or "Complete")
        if c.get("type") in ("Failed", "FailureTarget"):
            return "failed", f"{c.get('reason') or 'Failed'}: {c.get('message') or ''}".rstrip(": ")
    if int(status.get("succeeded") or 0) > 0:
        return "succeeded", "Complete"
    if int(status.get("failed") or 0) > int((job.get("spec") or {}).get("backoffLimit") or 0):
        return "failed", "BackoffLimitExceeded"
    return None


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _JobRoutes:
    """batch/v1 Job routes over the official ApiClient (kube.send: its config, auth, TLS, ApiException)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def create(self, namespace: str, *, body: Any, _preload_content: bool = False,
               _request_timeout: float | None = None) -> Any:
        from ..kube import send

        return send(self.api_client, "POST", JOBS, {"namespace": namespace}, [("fieldManager", FIELD_MANAGER)],
                    content_type="application/json", body=body, timeout_s=_request_timeout)

    def read(self, namespace: str, name: str, *, _preload_content: bool = False,
             _request_timeout: float | None = None) -> Any:
        from ..kube import send

        return send(self.api_client, "GET", JOBS + "/{name}", {"namespace": namespace, "name": name}, [],
                    timeout_s=_request_timeout)

    def list(self, namespace: str, *, _preload_content: bool = False, _request_timeout: float | None = None) -> Any:
        from ..kube import send

        return send(self.api_client, "GET", JOBS, {"namespace": namespace}, [("labelSelector", SELECTOR)],
                    timeout_s=_request_timeout)


class JobDispatcher:
    """One Kubernetes Job per incident: created idempotently, followed by one poller, outcome recorded."""

    def __init__(self, config: ServeConfig, metrics: ServeMetrics, runs: RunLocks, log: Callable[[str], None]) -> None:
        self.config, self.metrics, self.log, self.settings = config, metrics, log, config.job
        self.slots = max(1, self.settings.max_jobs)
        self._cond = threading.Condition()
        self._followed: dict[str, str] = {}  # Job name -> incident id
        self._seen: dict[str, dict[str, Any]] = {}  # Job name -> the Job as last listed
        self._listed_at = 0.0  # time.monotonic() of the last successful list
        self._problems: dict[str, str] = {}  # "create" / "follow" -> why the API cannot be used (for /readyz)
        self._cluster: Any = None
        self._connect_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stopping = False
        self.reconcile()

    # -- the server's side -------------------------------------------------------------------
    def running(self) -> int:
        return len(self._followed)

    def problems(self) -> list[str]:
        return list(self._problems.values())

    def kill_all(self) -> None:
        """Stop following; the Jobs run on in the cluster and the next serve adopts them (their alerts stay
        spooled). Nothing is deleted: serve's Role cannot delete."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def run(self, incident_id: str, folder: Path, alert: Alert, closing: Callable[[], bool],
            started: Callable[[], None] = lambda: None) -> None:
        """Create (or adopt) the incident's Job, follow it to its end, record the outcome in incident.json."""
        t0 = time.monotonic()
        index = read_index(folder) or {}
        if index.get("status") not in UNFINISHED:
            self.log(f"{incident_id}: finished meanwhile; no Job created")
            return
        body = job_spec(self.config, incident_id, folder, alert, index)
        name, ns = body["metadata"]["name"], self.settings.namespace
        job, created = self._create(body)
        t_created = time.monotonic()
        started()
        record = {"mode": "kubernetes", "job": name, "namespace": ns, "created": created,
                  "adopted": not created, "created_at": (job.get("metadata") or {}).get("creationTimestamp"),
                  "job_incident": ((job.get("metadata") or {}).get("labels") or {}).get(INCIDENT_LABEL),
                  "record": body["metadata"]["annotations"]["mistral-runbooks/record"]}
        with edit_index(folder) as idx:
            idx["dispatch"] = record
            if idx.get("status") == "queued":
                idx["status"] = "running"
        (self.metrics.started if created else self.metrics.adopted).inc()
        self.log(f"{incident_id}: Job {ns}/{name} " + ("created" if created else
                 f"already there (incident {record['job_incident']}): adopted, not created again"))
        self.metrics.running.inc()
        with self._cond:
            self._followed[name] = incident_id
            self._seen.setdefault(name, job)
            self._cond.notify_all()
        try:
            outcome, reason = self._follow(name, job, t_created, closing)
        finally:
            with self._cond:
                self._followed.pop(name, None)
            self.metrics.running.dec()
        self.metrics.duration.observe(time.monotonic() - t0)
        if outcome != "succeeded":
            self.metrics.failed.inc()
        final = self._seen.get(name) or job
        with edit_index(folder) as idx:
            status = final.get("status") or {}
            idx["dispatch"] = {**(idx.get("dispatch") or record), "outcome": outcome, "reason": reason,
                               "start_time": status.get("startTime"), "completion_time": status.get("completionTime"),
                               "recorded_at": _now()}
            if idx.get("status") in UNFINISHED:  # the Job's record went elsewhere (e.g. s3://), or it died early
                idx.update(status="completed" if outcome == "succeeded" else "failed", finished_at=_now())
                if outcome != "succeeded":
                    idx["error"] = f"Job {ns}/{name} {reason}"
        self.log(f"{incident_id}: Job {name} {outcome.upper()} ({reason}) in {time.monotonic() - t0:.1f} s: "
                 f"{(read_index(folder) or {}).get('verdict') or (read_index(folder) or {}).get('status')}")

    # -- the cluster's side ------------------------------------------------------------------
    def _connect(self) -> Any:
        with self._connect_lock:  # the poller and the first runs ask at once: one connection
            return self._connect_once()

    def _connect_once(self) -> Any:
        if self._cluster is None:
            from ..kube import connect

            self._cluster = connect(self.settings.kubeconfig, self.settings.context, timeout_s=5.0)
            self.log(f"dispatch: Kubernetes Jobs in namespace {self.settings.namespace} at "
                     f"{self._cluster.server or '?'} ({self._cluster.config_source})")
        return self._cluster

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """(data, finding): one bounded request; the finding says why not (unreachable, 401, 403, 409 ...)."""
        cluster = self._connect()
        ns = self.settings.namespace
        kubectl = cluster.kubectl(*what.split(), "-n", ns)
        result = cluster.run(what, kubectl, lambda deadline: cluster.request(
            deadline, _JobRoutes(cluster.api_client), method, ns, *args, verb=what.split()[0], resource="jobs.batch",
            namespace=ns, kubectl=kubectl, **kwargs))
        return result.data, result.finding

    def _create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the Job, True if we created it); 409 AlreadyExists -> the existing Job, adopted. Anything else:
        RunNotStarted (retried with backoff; the alert stays spooled) and /readyz says why."""
        name = body["metadata"]["name"]
        job, finding = self._call(f"create job/{name}", "create", body=body)
        if finding is None:
            self._problems.pop("create", None)
            return job, True
        if finding.http_status == 409:
            job, finding = self._call(f"get job/{name}", "read", name)
            if finding is None:
                self._problems.pop("create", None)
                return job, False
        why = finding.message.split(". ")[0]  # the finding's first sentence: what failed (the rest is for runbooks)
        self._problems["create"] = f"Kubernetes Jobs cannot be created: {why} (alerts stay spooled and are retried)"
        raise RunNotStarted(f"Job {name}: {why}")

    def _follow(self, name: str, job: dict[str, Any], since: float, closing: Callable[[], bool]) -> tuple[str, str]:
        """Wait for the Job's end, bounded: run timeout + start grace from its creation (an adopted Job's own)."""
        created = _epoch((job.get("metadata") or {}).get("creationTimestamp")) or time.time()
        limit = self.config.run_timeout_s + self.settings.start_grace_s
        deadline = time.monotonic() + max(0.0, created + limit - time.time())
        self._ensure_poller()
        with self._cond:
            while True:
                seen = self._seen.get(name)
                ended = job_outcome(seen) if seen else None
                if ended:
                    return ended
                if self._stopping or closing():
                    raise RuntimeError(f"stopped while following Job {name}; it runs on and is adopted at the next start")
                if seen is None and self._listed_at > since:
                    return "failed", "deleted before it finished (not in the cluster's list of serve's Jobs)"
                if time.monotonic() >= deadline:
                    return "failed", f"not finished within {limit:g} s of its creation (run timeout + start grace)"
                self._cond.wait(min(self.settings.poll_s, max(0.01, deadline - time.monotonic())))

    def _ensure_poller(self) -> None:
        with self._cond:
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll, name="serve-jobs", daemon=True)
                self._poller.start()

    def reconcile(self) -> None:
        """At start: what serve's Jobs the cluster holds, in the log (unfinished incidents in the spool
        meet theirs on create: 409, adopted). Never blocks the start: done by the poller."""
        self._ensure_poller()

    def _poll(self) -> None:
        """One LIST of serve's Jobs per poll while any is followed: every follower reads its Job from it."""
        first = True
        while True:
            with self._cond:
                # idle while nothing is followed, unless the last list failed: then retried each poll, so
                # /readyz clears once the API answers again, with or without new alerts
                while not self._followed and not self._stopping and not first and "follow" not in self._problems:
                    self._cond.wait(5)
                if self._stopping:
                    return
            started = time.monotonic()
            data, finding = self._call("list jobs", "list")
            if first and finding is None:
                items = (data or {}).get("items") or []
                self.log(f"dispatch: {len(items)} of serve's Jobs in namespace {self.settings.namespace}, "
                         f"{sum(job_outcome(j) is None for j in items)} unfinished; a spooled incident whose Job is "
                         "there adopts it")
            first = False
            with self._cond:
                if finding is None:
                    self._seen = {str((j.get("metadata") or {}).get("name")): j for j in (data or {}).get("items") or []}
                    self._listed_at = started
                    self._problems.pop("follow", None)
                else:
                    self._problems["follow"] = f"Kubernetes Jobs cannot be followed: {finding.message.split('. ')[0]}"
                self._cond.notify_all()
            time.sleep(self.settings.poll_s)


DISPATCHERS: dict[str, type[Responder] | type[JobDispatcher]] = {"local": Responder, "kubernetes": JobDispatcher}


def dispatcher_for(config: ServeConfig, metrics: ServeMetrics, runs: RunLocks,
                   log: Callable[[str], None]) -> Responder | JobDispatcher:
    """The dispatcher `config.dispatch` names (checked by the CLI against DISPATCHERS)."""
    return DISPATCHERS[config.dispatch](config, metrics, runs, log)
