"""Kubernetes, error logs: the seed's `kubectl logs ... | grep -i error | tail`, classified and grouped.

`ClusterLogs.error_logs` reads every container of the selected pods (bounded, `MAX_LOG_REQUESTS` at
a time), keeps the error lines and names each one's class (`classify_error`: auth failure, rate
limited, capacity exceeded, server error, timeout, connection, other); `group_errors` counts the
classes; `recent_errors` is triage step 4 in one bounded call. Log lines and messages are scrubbed
of tokens before they are returned.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from .. import params
from .._time import epoch, iso_z
from ..redact import scrub
from ..sources import loglines
from ._client import KubeFailure, KubeFinding, KubeResult
from .read import ClusterReads

MAX_LOG_REQUESTS = 5  # concurrent log reads, as kubectl's --max-log-requests default

ERROR_CLASSES = ("auth_failure", "rate_limited", "capacity_exceeded", "server_error", "timeout", "connection", "other")
ERROR_CLASS_LABELS = {
    "auth_failure": "auth failure (401/403)",
    "rate_limited": "rate limited (429)",
    "capacity_exceeded": "capacity exceeded (429)",
    "server_error": "server error (5xx)",
    "timeout": "timeout",
    "connection": "connection / network",
    "other": "other",
}


# -- error lines ---------------------------------------------------------------------------------------
_ERROR_LEVELS = frozenset({"error", "err", "fatal", "critical", "crit", "panic", "alert", "emerg", "emergency", "severe"})
# Field names: our service's (`loglines`) first, then what other loggers use.
_LEVEL_KEYS = (loglines.LEVEL, "lvl", "severity", "levelname", "log.level")
_MSG_KEYS = (loglines.MSG, "message", "error", "err", "event", "exception")
_CODE_KEYS = (loglines.CODE, "status", "status_code", "http_status", "statusCode")
_CODE_IN_TEXT = re.compile(r"(?i)(?:failed|status(?:_code)?|http|code|error|returned)[\s:=\"']*\b([1-5]\d\d|000)\b")
_CODE_HTTP_LOG = re.compile(r"HTTP/\d(?:\.\d)?\"\s+([1-5]\d\d)\b")
_TIMEOUT_WORDS = ("timeout", "timed out", "deadline exceeded")
_CONNECTION_WORDS = ("connecterror", "connection refused", "connection reset", "connection error", "connection aborted",
                     "connection closed", "network is unreachable", "name resolution", "name or service not known",
                     "nodename nor servname", "no route to host", "ssl", "certificate", "remoteprotocolerror",
                     "broken pipe", "eof occurred", "upstream connect error", "dns", "getaddrinfo", "network error")
_TS_KEYS = (loglines.TS, "time", "timestamp", "@timestamp")


def _first(entry: dict[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if entry.get(k) not in (None, ""):
            return entry[k]
    return None


def classify_error(text: str, code: Any = None) -> str:
    """The error class of one log line: auth_failure, rate_limited, capacity_exceeded, server_error,
    timeout, connection or other. An HTTP code, when known, decides first; then words.

    A 429 is `capacity_exceeded` when it says capacity (Mistral's "Service tier capacity exceeded",
    which our service logs by its type `invalid_request_error`), else `rate_limited`. `code` counts
    when it is a status code by `loglines.http_code` (three ASCII digits: the test the error rate's
    `loglines.is_error` builds on); otherwise (e.g. "2xx") a code is looked for in the words.
    """
    t = (text or "").lower()
    c = loglines.http_code(str(code).strip()) if code not in (None, "") else None
    if c is None:  # not a status code (e.g. "2xx"): look for one in the words
        m = _CODE_IN_TEXT.search(text or "") or _CODE_HTTP_LOG.search(text or "")
        c = m.group(1) if m else ""
    if c == "429" or "rate limit" in t or "rate_limit" in t or "too many requests" in t or "capacity" in t:
        if "capacity" in t or (c == "429" and "invalid_request_error" in t):
            return "capacity_exceeded"
        return "rate_limited"
    if c in ("401", "403") or any(w in t for w in ("unauthorized", "unauthenticated", "invalid api key",
                                                   "forbidden", "authentication", "permission denied")):
        return "auth_failure"
    if c.startswith("5") or any(w in t for w in ("internal server error", "bad gateway", "service unavailable",
                                                 "server_error", "gateway timeout")):
        return "server_error"
    if any(w in t for w in _TIMEOUT_WORDS):
        return "timeout"
    if any(w in t for w in _CONNECTION_WORDS):
        return "connection"
    return "other"


def _line_facts(line: str) -> tuple[str, Any, str | None, dict[str, Any] | None]:
    """(message, code, level, json entry) of one raw line."""
    entry = loglines.parse(line)
    if entry is None:
        return line.strip(), None, None, None
    msg = _first(entry, _MSG_KEYS)
    level = _first(entry, _LEVEL_KEYS)
    code = _first(entry, _CODE_KEYS)
    return (str(msg) if msg is not None else line.strip()), code, (str(level).lower() if level else None), entry


def is_error_line(line: str, pattern: re.Pattern[str]) -> bool:
    """JSON lines: an error level, or `pattern` in the message fields; plain lines: `pattern` anywhere."""
    msg, _code, level, entry = _line_facts(line)
    if entry is None:
        return bool(pattern.search(line))
    if level in _ERROR_LEVELS:
        return True
    texts = [str(entry[k]) for k in _MSG_KEYS if entry.get(k) not in (None, "")] or [msg]
    return any(pattern.search(t) for t in texts)


def group_errors(lines: Iterable[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """Error lines grouped by class, most frequent first: [{error_class, label, count, example, last_seen}].

    Accepts raw lines (JSON or plain) or the line dicts `Cluster.error_logs` returns.
    """
    groups: dict[str, dict[str, Any]] = {}
    for item in lines:
        if isinstance(item, dict):
            cls = item.get("error_class") or classify_error(str(item.get("msg") or item.get("line") or ""),
                                                            item.get("code"))
            example = str(item.get("msg") or item.get("line") or "")
            ts = item.get("ts")
        else:
            msg, code, _level, entry = _line_facts(str(item))
            cls = classify_error(msg, code)
            example = msg
            ts = _first(entry, _TS_KEYS) if entry else None
        g = groups.setdefault(cls, {"error_class": cls, "label": ERROR_CLASS_LABELS.get(cls, cls), "count": 0,
                                    "example": scrub(example)[:300], "last_seen": None})
        g["count"] += 1
        if ts is not None and (g["last_seen"] is None or str(ts) >= str(g["last_seen"])):
            g["last_seen"] = str(ts)
            g["example"] = scrub(example)[:300]
    order = {c: i for i, c in enumerate(ERROR_CLASSES)}
    return sorted(groups.values(), key=lambda g: (-g["count"], order.get(g["error_class"], 99)))


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _grep_pattern(pattern: str) -> str:
    """The ERE `grep -iE` needs to pick the lines `is_error_line` picks: `pattern`, or a JSON error level.

    `pattern` is a Python regular expression; words and alternations read the same in ERE, Python-only
    syntax (`\\d`, lookarounds) does not. A JSON line at a non-error level with `pattern` outside its
    message fields is grep's and not the runbook's."""
    keys = "|".join(re.escape(k).replace("\\.", "[.]") for k in _LEVEL_KEYS)
    levels = "|".join(sorted(_ERROR_LEVELS))
    return f'{pattern}|"({keys})": *"({levels})"'


def _log_targets(pods: list[dict[str, Any]], previous: bool) -> list[tuple[str, str, bool]]:
    """(pod, container, previous) for every container, and the last instance of restarted ones with `previous`."""
    targets = []
    for p in pods:
        statuses = {c.get("name"): c for c in (p.get("status") or {}).get("containerStatuses") or []}
        for c in (p.get("spec") or {}).get("containers") or []:
            targets.append((p["metadata"]["name"], c["name"], False))
            if previous and int((statuses.get(c["name"]) or {}).get("restartCount") or 0) > 0:
                targets.append((p["metadata"]["name"], c["name"], True))
    return targets


def _error_entries(text: str, pod: str, container: str, prev: bool,
                   rx: re.Pattern[str]) -> tuple[int, list[dict[str, Any]]]:
    """(lines scanned, error entries) of one container's log, read with kubelet timestamps."""
    scanned = 0
    entries: list[dict[str, Any]] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        scanned += 1
        stamp, _, line = raw.partition(" ")
        ts = epoch(stamp)
        if ts is None:  # no kubelet timestamp: the whole thing is the line
            line = raw
        if not is_error_line(line, rx):
            continue
        msg, code, level, entry = _line_facts(line)
        if ts is None and entry is not None:
            ts = epoch(str(_first(entry, _TS_KEYS) or ""))
        entries.append({"ts": None if ts is None else iso_z(ts), "_t": ts or 0.0, "pod": pod, "container": container,
                        "previous": prev, "level": level, "code": None if code is None else str(code),
                        "model": entry.get(loglines.MODEL) if entry else None, "msg": scrub(msg)[:500],
                        "error_class": classify_error(msg, code), "line": scrub(line)[:500]})
    return scanned, entries


def _partial_finding(findings: list[KubeFinding], targets: int) -> KubeFinding | None:
    """None when every log was read; the finding when none was; else one saying the lines are partial."""
    if not findings:
        return None
    if len(findings) == targets:
        return findings[0]
    worst = findings[0]
    return KubeFinding(worst.status, f"{len(findings)} of {targets} container logs could not be read; the lines "
                                     f"shown are partial. {worst.message}",
                       worst.http_status, worst.verb, worst.resource, worst.namespace, worst.user, worst.server,
                       worst.kubectl, worst.detail)


def no_pods_note(selector: str, namespace: str) -> str:
    """What an empty selection means, said as such: no lines read is not "no error lines"."""
    return (f"no pods matched `{selector}` in namespace `{namespace}`: no logs were read (check `label_selector` "
            f"and `namespace` with `kubectl get pods -n {namespace} --show-labels`)")


class ClusterLogs(ClusterReads):
    """The log reads of `kube.Cluster`."""

    def error_logs(self, namespace: str = "default", selector: str = "app=mistral-service", since_s: int = 300,
                   tail: int = 10, pattern: str = "error", previous: bool = False) -> KubeResult:
        """The seed's `kubectl logs -l SELECTOR --since=5m | grep -i error | tail -10`, for every container.

        Lines are read with kubelet timestamps from every container of every selected pod (and, with
        `previous`, from the last terminated instance of restarted containers), merged in time order.
        JSON lines count as errors by level (error, fatal, critical, ...) or `pattern` in their message;
        plain lines by `pattern` (a case-insensitive regular expression) anywhere. `data["lines"]` holds
        the last `tail`, `data["groups"]` the classes of every matching line in the window. When the
        selector matches no pod, `data["note"]` says so (no lines is then not "no errors").
        """
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        since_s = params.positive_int("since_s", since_s, maximum=7 * 86400)
        tail = params.positive_int("tail", tail, maximum=10_000)
        try:
            rx = re.compile(params.text("pattern", pattern, allow_empty=False), re.IGNORECASE)
        except re.error as exc:
            raise params.ParameterError("pattern", pattern, f"a regular expression ({exc})") from None
        # kubectl prints one container after another: sorted on the kubelet timestamp (the field
        # after the --prefix), the last `tail` are the newest, as here
        cmd = (self.kubectl("logs", "-n", namespace, "-l", selector, "--all-containers", "--prefix", "--timestamps",
                            f"--since={_duration(since_s)}", "--tail=-1")
               + f" | sort -s -k2,2 | grep -iE {shlex.quote(_grep_pattern(pattern))} | tail -n {tail}")

        def run(deadline: float) -> tuple[dict[str, Any], KubeFinding | None]:
            pods = self.list_pods(deadline, namespace, selector, cmd)
            targets = _log_targets(pods, previous)
            per: list[dict[str, Any]] = []
            findings: list[KubeFinding] = []
            entries: list[dict[str, Any]] = []
            for (pod, container, prev), got in self._read_logs(deadline, namespace, since_s, targets, cmd):
                row: dict[str, Any] = {"pod": pod, "container": container, "previous": prev, "lines": 0,
                                       "matched": 0, "error": None}
                per.append(row)
                if isinstance(got, KubeFinding):
                    row["error"] = got.message
                    if got.http_status not in (400, 404):  # e.g. a container waiting to start
                        findings.append(got)
                    continue
                row["lines"], found = _error_entries(got, pod, container, prev, rx)
                row["matched"] = len(found)
                entries.extend(found)
            entries.sort(key=lambda e: e["_t"])
            for e in entries:
                del e["_t"]
            prev_cmds = [self.kubectl("logs", "-n", namespace, pod, "-c", container, "--previous", "--timestamps",
                                      f"--since={_duration(since_s)}")
                         + f" | grep -iE {shlex.quote(_grep_pattern(pattern))}"
                         for pod, container, prev in targets if prev]
            data = {"lines": entries[-tail:], "matched": len(entries), "scanned": sum(r["lines"] for r in per),
                    "kubectl_previous": prev_cmds,
                    "since_s": since_s, "tail": tail, "pattern": pattern, "pods": [p["metadata"]["name"] for p in pods],
                    "containers": per, "groups": group_errors(entries), "partial": bool(findings),
                    "note": None if pods else no_pods_note(selector, namespace)}
            return data, _partial_finding(findings, len(targets))

        return self.run("error_logs", cmd, run, rows_key="lines")

    def _read_logs(self, deadline: float, namespace: str, since_s: int, targets: list[tuple[str, str, bool]],
                   cmd: str) -> list[tuple[tuple[str, str, bool], str | KubeFinding]]:
        """Each target's log text (or the finding that kept it), `MAX_LOG_REQUESTS` at a time, within `deadline`."""
        if not targets:
            return []
        core = self.apis().CoreV1Api(self.api_client)

        def fetch(target: tuple[str, str, bool]) -> str:
            pod, container, prev = target
            extra = {"previous": True} if prev else {"since_seconds": since_s}
            return self.request(deadline, core, "read_namespaced_pod_log", pod, namespace, container=container,
                                timestamps=True, text=True, verb="get", resource="pods/log",
                                namespace=namespace, name=pod, kubectl=cmd, **extra)

        pool = ThreadPoolExecutor(max_workers=min(MAX_LOG_REQUESTS, len(targets)), thread_name_prefix="kube-logs")
        futures = {pool.submit(fetch, t): t for t in targets}
        done, _pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.2)
        pool.shutdown(wait=False, cancel_futures=True)
        out: list[tuple[tuple[str, str, bool], str | KubeFinding]] = []
        for fut, target in futures.items():
            if fut not in done:
                out.append((target, self.unreachable(TimeoutError("log read did not finish"), cmd)))
                continue
            try:
                out.append((target, fut.result()))
            except KubeFailure as fail:
                out.append((target, fail.finding))
        return out

    def group_errors(self, lines: Iterable[str | dict[str, Any]]) -> list[dict[str, Any]]:
        """See the module-level `group_errors`."""
        return group_errors(lines)


# -- triage step 4 in one bounded call --------------------------------------------------------------------
def recent_errors(kubeconfig: str = "", context: str = "", namespace: str = "default",
                  selector: str = "app=mistral-service", since_s: int = 300, tail: int = 10,
                  timeout_s: float = 5.0, pattern: str = "error") -> dict[str, Any]:
    """Connect and read the recent error lines and their classes, all within `timeout_s`.

    Returns plain data: status ("ok" or the finding's status), reason (the finding's words),
    finding, kubectl, lines, groups, matched, scanned, partial, pods (their names) and note ("no pods
    matched ..." when the selector matched none, else None). Only the log reads are needed, so it
    connects a `ClusterLogs` (the same loading as `kube.connect`).
    """
    t0 = time.monotonic()
    cluster = ClusterLogs.from_kubeconfig(kubeconfig, context, timeout_s)
    try:
        cluster.timeout_s = max(0.1, timeout_s - (time.monotonic() - t0))
        r = cluster.error_logs(namespace, selector, since_s=since_s, tail=tail, pattern=pattern)
    finally:
        cluster.close()
    data = r.data or {}
    return {"status": "ok" if r.ok else r.finding.status,  # type: ignore[union-attr]
            "reason": None if r.ok else r.finding.message,  # type: ignore[union-attr]
            "finding": None if r.ok else r.finding.to_dict(),  # type: ignore[union-attr]
            "kubectl": r.kubectl, "context": cluster.context, "server": cluster.server,
            "lines": data.get("lines", []), "groups": data.get("groups", []), "matched": data.get("matched", 0),
            "scanned": data.get("scanned", 0), "partial": bool(data.get("partial")),
            "pods": data.get("pods", []), "note": data.get("note"), "elapsed_s": round(time.monotonic() - t0, 3)}
