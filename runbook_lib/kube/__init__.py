"""Kubernetes, read side: what the seed runbook's `kubectl` commands show, as plain data.

Every function goes through the official `kubernetes` client (configured from a kubeconfig path and
context, or in-cluster), is bounded by one deadline (`timeout_s` for the whole call, however many
requests it makes; no retries), and returns a `KubeResult`: the data (dicts and lists; `.frame()`
gives a pandas DataFrame), the equivalent `kubectl` command, and, when the cluster said no or did
not answer, a `KubeFinding` in words instead of an exception:

- 401 (expired or invalid credentials): "re-authenticate with your cloud provider";
- 403: which verb on which resource was refused, and "escalate to an admin";
- unreachable (refused, timed out, DNS, TLS): the section is unavailable, the runbook goes on.

Nothing here writes to the cluster, and no secret value is ever returned: env values whose name or
shape looks secret are replaced by a fingerprint, Secret data only ever yields a fingerprint, and
log lines, event messages and change causes are scrubbed of tokens.

`kubernetes` and `pandas` are imported inside the functions that need them (the verdict path of a
notebook must not pay for them).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shlex
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import params
from .._time import epoch, iso_z
from ..labels import equality_labels
from ..sources.logstats import parse as parse_line
from ..redact import scrub, secret_looking
from ..secrets import fingerprint

UNAUTHORIZED, FORBIDDEN, UNREACHABLE, NOT_FOUND, ERROR = "unauthorized", "forbidden", "unreachable", "not_found", "error"
REAUTH = "re-authenticate with your cloud provider"
ESCALATE = "escalate to an admin"
MAX_LOG_REQUESTS = 5  # concurrent log reads, as kubectl's --max-log-requests default
MISTRAL_API_HOST = "api.mistral.ai"

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


# -- results -------------------------------------------------------------------------------------
@dataclass
class KubeFinding:
    """Why a cluster section has no (or partial) data, in words an on-call engineer can act on."""

    status: str  # unauthorized | forbidden | unreachable | not_found | error
    message: str
    http_status: int | None = None
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    user: str | None = None
    server: str = ""
    kubectl: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.message


@dataclass
class KubeResult:
    """What one read returned: `data`, the equivalent `kubectl`, and a `finding` when it failed."""

    name: str
    kubectl: str
    data: Any = None
    finding: KubeFinding | None = None
    elapsed_s: float = 0.0
    rows_key: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.finding is None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The tabular part of `data` (pods, lines, events, env, revisions, policies)."""
        if self.data is None:
            return []
        if self.rows_key is not None:
            return list(self.data.get(self.rows_key) or [])
        if isinstance(self.data, list):
            return list(self.data)
        return [self.data]

    def frame(self) -> Any:
        """`rows` as a pandas DataFrame (nested values kept as they are)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "kubectl": self.kubectl, "data": self.data,
                "finding": self.finding.to_dict() if self.finding else None, "elapsed_s": round(self.elapsed_s, 3)}


class _Fail(Exception):
    def __init__(self, finding: KubeFinding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def env_entry(container: str, env: dict[str, Any]) -> dict[str, Any]:
    """One env var as it may be shown: literal values unless secret-looking, references as references."""
    name = str(env.get("name", ""))
    out: dict[str, Any] = {"container": container, "name": name, "source": "literal", "value": None,
                           "redacted": False, "ref": None, "display": ""}
    if "valueFrom" in env and env["valueFrom"]:
        vf = env["valueFrom"]
        if "secretKeyRef" in vf:
            ref = vf["secretKeyRef"] or {}
            out.update(source="secret", secret=ref.get("name"), key=ref.get("key"),
                       ref=f"{ref.get('name')}/{ref.get('key')}")
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"] or {}
            out.update(source="configmap", ref=f"{ref.get('name')}/{ref.get('key')}")
        elif "fieldRef" in vf:
            out.update(source="field", ref=(vf["fieldRef"] or {}).get("fieldPath"))
        elif "resourceFieldRef" in vf:
            out.update(source="resource", ref=(vf["resourceFieldRef"] or {}).get("resource"))
        else:
            out.update(source="other", ref=", ".join(sorted(vf)))
        out["display"] = f"<{out['source']}: {out['ref']}>"
        return out
    value = env.get("value")
    value = "" if value is None else str(value)
    if value and secret_looking(name, value):
        fp = fingerprint(value)
        out.update(redacted=True, fingerprint=fp, length=len(value), display=f"<redacted {fp}, {len(value)} chars>")
    else:
        out.update(value=value, display=value)
    return out


# -- selectors -------------------------------------------------------------------------------------
def _selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels, matchExpressions) against labels; `{}` selects all."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _labels_from_selector(selector: str) -> dict[str, str]:
    return equality_labels(selector)


# -- time --------------------------------------------------------------------------------------------
def _ts(value: Any) -> float | None:
    return epoch(value)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_z(ts)


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


# -- error lines ---------------------------------------------------------------------------------------
_ERROR_LEVELS = frozenset({"error", "err", "fatal", "critical", "crit", "panic", "alert", "emerg", "emergency", "severe"})
_LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level")
_MSG_KEYS = ("msg", "message", "error", "err", "event", "exception")
_CODE_KEYS = ("code", "status", "status_code", "http_status", "statusCode")
_CODE_IN_TEXT = re.compile(r"(?i)(?:failed|status(?:_code)?|http|code|error|returned)[\s:=\"']*\b([1-5]\d\d|000)\b")
_CODE_HTTP_LOG = re.compile(r"HTTP/\d(?:\.\d)?\"\s+([1-5]\d\d)\b")
_TIMEOUT_WORDS = ("timeout", "timed out", "deadline exceeded")
_CONNECTION_WORDS = ("connecterror", "connection refused", "connection reset", "connection error", "connection aborted",
                     "connection closed", "network is unreachable", "name resolution", "name or service not known",
                     "nodename nor servname", "no route to host", "ssl", "certificate", "remoteprotocolerror",
                     "broken pipe", "eof occurred", "upstream connect error", "dns", "getaddrinfo", "network error")


def _first(entry: dict[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if entry.get(k) not in (None, ""):
            return entry[k]
    return None


def classify_error(text: str, code: Any = None) -> str:
    """The error class of one log line: auth_failure, rate_limited, capacity_exceeded, server_error,
    timeout, connection or other. An HTTP code, when known, decides first; then words.

    A 429 is `capacity_exceeded` when it says capacity (Mistral's "Service tier capacity exceeded",
    which our service logs by its type `invalid_request_error`), else `rate_limited`.
    """
    t = (text or "").lower()
    c = str(code).strip() if code not in (None, "") else ""
    if not re.fullmatch(r"\d{3}", c):
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
    entry = parse_line(line)
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
            ts = _first(entry, ("ts", "time", "timestamp", "@timestamp")) if entry else None
        g = groups.setdefault(cls, {"error_class": cls, "label": ERROR_CLASS_LABELS.get(cls, cls), "count": 0,
                                    "example": scrub(example)[:300], "last_seen": None})
        g["count"] += 1
        if ts is not None and (g["last_seen"] is None or str(ts) >= str(g["last_seen"])):
            g["last_seen"] = str(ts)
            g["example"] = scrub(example)[:300]
    order = {c: i for i, c in enumerate(ERROR_CLASSES)}
    return sorted(groups.values(), key=lambda g: (-g["count"], order.get(g["error_class"], 99)))


# -- network policies --------------------------------------------------------------------------------------
_NON_PUBLIC = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")]


def _port_allows_443(ports: list[dict[str, Any]] | None) -> bool:
    if not ports:
        return True
    for p in ports:
        if (p.get("protocol") or "TCP").upper() != "TCP":
            continue
        port, end = p.get("port"), p.get("endPort")
        if port is None:
            return True
        if isinstance(port, int) and (port == 443 or (end and port <= 443 <= int(end))):
            return True
        if isinstance(port, str) and port.isdigit() and int(port) == 443:
            return True
    return False


def _ip_block_allows(block: dict[str, Any], targets: list[str]) -> bool | None:
    """True/False for known target IPs; without them, whether the block reaches the public internet."""
    try:
        net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except ValueError:
        return False
    if targets:
        for t in targets:
            ip = ipaddress.ip_address(t)
            if ip.version == net.version and ip in net and not any(ip.version == e.version and ip in e for e in excepts):
                return True
        return False
    if net.prefixlen == 0:
        return True
    if any(net.version == p.version and net.subnet_of(p) for p in _NON_PUBLIC):  # type: ignore[arg-type]
        return False
    return None  # a specific public range: it may or may not hold the API's addresses


def _peer_text(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        b = peer["ipBlock"] or {}
        ex = f" except {', '.join(b['except'])}" if b.get("except") else ""
        return f"{b.get('cidr')}{ex}"
    parts = []
    if "podSelector" in peer:
        parts.append("pods " + (_selector_text(peer["podSelector"]) or "(all)"))
    if "namespaceSelector" in peer:
        parts.append("in namespaces " + (_selector_text(peer["namespaceSelector"]) or "(all)"))
    elif "podSelector" in peer:
        parts.append("in the same namespace")
    return " ".join(parts)


def _selector_text(sel: dict[str, Any] | None) -> str:
    sel = sel or {}
    terms = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    terms += [f"{e.get('key')} {e.get('operator')} ({','.join(e.get('values') or [])})"
              for e in sel.get("matchExpressions") or []]
    return ",".join(terms)


def _ports_text(ports: list[dict[str, Any]] | None) -> str:
    if not ports:
        return "any port"
    return ", ".join(f"{(p.get('protocol') or 'TCP')}/{p.get('port', '*')}"
                     + (f"-{p['endPort']}" if p.get("endPort") else "") for p in ports)


def analyse_policy(policy: dict[str, Any], pod_labels: dict[str, str], target_ips: list[str]) -> dict[str, Any]:
    """Whether one NetworkPolicy selects the pods, restricts their egress, and lets TCP 443 out."""
    meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
    selects = _selector_matches(spec.get("podSelector"), pod_labels)
    restricts = selects and "Egress" in types
    rules = spec.get("egress") or []
    texts, allows = [], False
    for rule in rules:
        peers = rule.get("to") or []
        port_ok = _port_allows_443(rule.get("ports"))
        dest = "anywhere" if not peers else "; ".join(_peer_text(p) for p in peers)
        texts.append(f"to {dest} on {_ports_text(rule.get('ports'))}")
        if not port_ok:
            continue
        if not peers:
            allows = True
            continue
        for peer in peers:
            verdict = _ip_block_allows(peer["ipBlock"] or {}, target_ips) if "ipBlock" in peer else False
            if verdict is True:
                allows = True
            elif verdict is None and allows is False:
                allows = None  # type: ignore[assignment]
    if not restricts:
        could_block, reason = False, ("does not select the pods" if not selects else "does not restrict egress")
        allows_out: bool | None = True
    elif allows is True:
        could_block, reason, allows_out = False, f"allows TCP 443 to {MISTRAL_API_HOST}", True
    elif allows is None:
        could_block, reason, allows_out = True, ("allows TCP 443 only to specific public ranges: check they hold "
                                                 f"{MISTRAL_API_HOST}'s addresses"), None
    else:
        could_block, allows_out = True, False
        reason = ("denies all egress" if not rules else
                  f"allows egress only {', '.join(texts)}: nothing that reaches {MISTRAL_API_HOST}:443")
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "selects_pods": selects,
            "policy_types": types, "restricts_egress": restricts, "allows_mistral": allows_out,
            "could_block_mistral": could_block, "egress_rules": texts, "reason": reason}


# -- the cluster ----------------------------------------------------------------------------------------
def connect(kubeconfig: str = "", context: str = "", timeout_s: float = 5.0) -> Cluster:
    """A `Cluster` from a kubeconfig (path and context) or, with an empty path inside a pod, in-cluster config.

    Never raises for a bad or expired configuration: the returned Cluster then carries a `finding`
    and every read returns it. Loading is bounded by `timeout_s` too (credential plugins can hang).
    """
    timeout_s = params.timeout("timeout_s", timeout_s)
    kubeconfig = params.text("kubeconfig", kubeconfig, maximum=4096)
    context = params.text("context", context)
    in_cluster = not kubeconfig and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    box: dict[str, Any] = {}
    from kubernetes import client, config  # imported here: local work that the deadline must not count

    def load() -> None:
        try:
            cfg = type.__call__(client.Configuration)
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)
                box["context"] = "in-cluster"
            else:
                config.load_kube_config(config_file=path, context=context or None, client_configuration=cfg,
                                        persist_config=False)
                try:
                    contexts, current = config.list_kube_config_contexts(config_file=path)
                    box["context"] = context or (current or {}).get("name", "")
                    box["user"] = next((str((c.get("context") or {}).get("user") or "") for c in contexts or []
                                        if c.get("name") == box["context"]), "")
                except Exception:  # noqa: BLE001 - the names are only for display and records
                    box["context"] = context
            cfg.retries = 0  # one attempt per request: the deadline, not urllib3, decides
            box["cfg"] = cfg
            box["client"] = client.ApiClient(cfg)
        except Exception as exc:  # noqa: BLE001 - turned into a finding
            box["error"] = exc

    worker = threading.Thread(target=load, name="kube-config", daemon=True)
    worker.start()
    worker.join(timeout_s)
    shown_path = "" if in_cluster else (kubeconfig or "")
    if worker.is_alive():
        finding = KubeFinding(UNAUTHORIZED, f"Loading the kubeconfig did not finish within {timeout_s:g} s: its "
                                            "credential plugin may be waiting for an interactive login. "
                                            f"{REAUTH.capitalize()} (e.g. `gcloud auth login`, `aws sso login`, "
                                            "`az login`), then run the runbook again.")
        return Cluster(None, kubeconfig=shown_path, context=context, timeout_s=timeout_s, finding=finding)
    if "error" in box:
        return Cluster(None, kubeconfig=shown_path, context=context, timeout_s=timeout_s,
                       finding=_config_finding(box["error"], path, context, in_cluster))
    return Cluster(box["client"], kubeconfig=shown_path, context=box.get("context", context), timeout_s=timeout_s,
                   server=str(box["cfg"].host), in_cluster=in_cluster, user=box.get("user", ""))


def _config_finding(exc: BaseException, path: str, context: str, in_cluster: bool) -> KubeFinding:
    text = scrub(f"{type(exc).__name__}: {exc}")
    low = text.lower()
    if in_cluster:
        return KubeFinding(ERROR, f"In-cluster configuration failed ({text}): the pod's service account token or "
                                  "CA is missing. This section is unavailable; the runbook goes on.", detail=text)
    if any(w in low for w in ("expired", "refresh", "exec", "credential", "oidc", "token", "unauthorized", "login")):
        return KubeFinding(UNAUTHORIZED, f"The kubeconfig's credentials could not be obtained ({text}). "
                                         f"{REAUTH.capitalize()} (e.g. `gcloud auth login`, `aws sso login`, "
                                         "`az login`), then run the runbook again.", detail=text)
    where = f"kubeconfig {path!r}" + (f", context {context!r}" if context else "")
    return KubeFinding(ERROR, f"Cannot use the {where}: {text}. Check the `kubeconfig` and `kube_context` "
                              "parameters. This section is unavailable; the runbook goes on.", detail=text)


class Cluster:
    """Read-only views of one cluster. Each method: one deadline of `timeout_s`, a `KubeResult`."""

    def __init__(self, api_client: Any, *, kubeconfig: str = "", context: str = "", timeout_s: float = 5.0,
                 server: str = "", in_cluster: bool = False, finding: KubeFinding | None = None,
                 user: str = "") -> None:
        self.api_client = api_client
        self.kubeconfig = kubeconfig
        self.context = context
        self.user = user  # the kubeconfig user of the context: who made a change, for the record
        self.timeout_s = timeout_s
        self.server = server
        self.in_cluster = in_cluster
        self.finding = finding

    def close(self) -> None:
        if self.api_client is not None:
            try:
                self.api_client.close()
            except Exception:  # noqa: BLE001 - closing a pool must not fail a runbook
                pass

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------
    def kubectl(self, *args: str) -> str:
        """The equivalent kubectl command, with this cluster's --kubeconfig and --context."""
        parts = ["kubectl"]
        if self.kubeconfig:
            parts += ["--kubeconfig", self.kubeconfig]
        if self.context and not self.in_cluster:
            parts += ["--context", self.context]
        return shlex.join(parts + list(args))

    def _apis(self) -> Any:
        """`CoreV1Api` & co. as thin routes over the official `ApiClient` (see `_RawApi`)."""
        return _RAW_APIS

    def _request(self, deadline: float, api: Any, method: str, *args: Any, verb: str, resource: str,
                 namespace: str | None = None, name: str | None = None, text: bool = False, kubectl: str = "",
                 **kwargs: Any) -> Any:
        """One API call, bounded by what is left of `deadline`; a `_Fail` with a finding on failure."""
        if self.finding is not None:
            raise _Fail(self.finding)
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            raise _Fail(self._unreachable(TimeoutError("deadline reached before the request"), kubectl))
        from kubernetes.client.exceptions import ApiException

        try:
            resp = getattr(api, method)(*args, _preload_content=False, _request_timeout=remaining, **kwargs)
            try:
                body = resp.data
            finally:
                try:
                    resp.release_conn()
                except Exception:  # noqa: BLE001
                    pass
        except ApiException as exc:
            if not exc.status:
                raise _Fail(self._unreachable(exc, kubectl)) from None
            raise _Fail(self._api_finding(exc, verb, resource, namespace, name, kubectl)) from None
        except Exception as exc:  # noqa: BLE001 - urllib3/socket errors: no answer in time
            raise _Fail(self._unreachable(exc, kubectl)) from None
        if text:
            return body.decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            raise _Fail(KubeFinding(ERROR, f"The API server at {self.server} answered {resource} with something "
                                           "that is not JSON: is this really a Kubernetes API server?",
                                    server=self.server, kubectl=kubectl)) from None

    def _unreachable(self, exc: BaseException, kubectl: str) -> KubeFinding:
        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        if "timed out" in low or "timeout" in low or isinstance(exc, TimeoutError) or "deadline" in low:
            why = f"no answer within {self.timeout_s:g} s"
        elif "refused" in low:
            why = "connection refused"
        elif "name or service not known" in low or "nodename nor servname" in low or "resolution" in low:
            why = "its name does not resolve"
        elif "ssl" in low or "certificate" in low:
            why = "TLS failed (certificate or protocol)"
        else:
            why = "the connection failed"
        return KubeFinding(UNREACHABLE, f"The Kubernetes API server at {self.server or '?'} is unreachable ({why}). "
                                        "This section is unavailable; the runbook goes on to a verdict without it. "
                                        "Check VPN/bastion access and the cluster endpoint in the kubeconfig.",
                           server=self.server, kubectl=kubectl, detail=scrub(text)[:500])

    def _api_finding(self, exc: Any, verb: str, resource: str, namespace: str | None, name: str | None,
                     kubectl: str) -> KubeFinding:
        status = int(exc.status)
        body: dict[str, Any] = {}
        try:
            parsed = json.loads(exc.body) if exc.body else {}
            body = parsed if isinstance(parsed, dict) else {}
        except (ValueError, TypeError):
            pass
        server_msg = scrub(str(body.get("message") or exc.reason or ""))[:500]
        where = f' in namespace "{namespace}"' if namespace else ""
        common = {"http_status": status, "server": self.server, "kubectl": kubectl, "detail": server_msg,
                  "namespace": namespace}
        if status == 401:
            return KubeFinding(UNAUTHORIZED, f"The API server at {self.server} rejected the credentials (401 "
                                             "Unauthorized): they are expired or invalid. "
                                             f"{REAUTH.capitalize()} (e.g. `gcloud auth login`, `aws sso login`, "
                                             "`az login`) and refresh the kubeconfig, then run the runbook again.",
                               verb=verb, resource=resource, **common)
        if status == 403:
            m = re.search(r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<res>[^"]+)"'
                          r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<ns>[^"]*)")?', server_msg)
            user = m.group("user") if m else None
            verb_ = m.group("verb") if m else verb
            res = m.group("res") if m else resource
            group = (m.group("group") if m else None) or ""
            ns = (m.group("ns") if m else None) or namespace
            res_full = f"{res}.{group}" if group else res
            scope = f' in namespace "{ns}"' if ns else " at cluster scope"
            who = f'User "{user}"' if user else "These credentials"
            common["namespace"] = ns
            return KubeFinding(FORBIDDEN, f"{who} may not `{verb_}` `{res_full}`{scope} (403 Forbidden). "
                                          f"{ESCALATE.capitalize()}: ask for `{verb_}` on `{res_full}`{scope} "
                                          f"(e.g. a RoleBinding to the `{_role_for(verb_)}` ClusterRole).",
                               verb=verb_, resource=res_full, user=user, **common)
        if status == 404:
            what = f'{resource} "{name}"' if name else resource
            return KubeFinding(NOT_FOUND, f"{what} not found{where} ({server_msg}). Check the name and the "
                                          "namespace parameters.", verb=verb, resource=resource, **common)
        return KubeFinding(ERROR, f"The API server answered {status} {body.get('reason') or exc.reason or ''} to "
                                  f"`{verb} {resource}`{where}: {server_msg}. This section is unavailable; the runbook "
                                  "goes on.", verb=verb, resource=resource, **common)

    def _run(self, name: str, kubectl: str, fn: Any, rows_key: str | None = None) -> KubeResult:
        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        if self.finding is not None:  # the configuration already failed: no request at all
            finding = KubeFinding(**dict(self.finding.to_dict(), kubectl=kubectl))
            return KubeResult(name, kubectl, None, finding, 0.0, rows_key)
        try:
            data = fn(deadline)
            finding = None
            if isinstance(data, tuple):
                data, finding = data
        except _Fail as fail:
            data, finding = None, fail.finding
        if finding is not None and not finding.kubectl:
            finding.kubectl = kubectl
        return KubeResult(name, kubectl, data, finding, time.monotonic() - t0, rows_key)

    # ---- pods --------------------------------------------------------------------------------
    def _list_pods(self, deadline: float, namespace: str, selector: str, kubectl: str) -> list[dict[str, Any]]:
        core = self._apis().CoreV1Api(self.api_client)
        body = self._request(deadline, core, "list_namespaced_pod", namespace, label_selector=selector,
                             verb="list", resource="pods", namespace=namespace, kubectl=kubectl)
        return sorted(body.get("items") or [], key=lambda p: p["metadata"]["name"])

    def pods(self, namespace: str = "default", selector: str = "app=mistral-service") -> KubeResult:
        """`kubectl get pods -l SELECTOR -o wide`: status, ready, restarts, last restart, node, per container."""
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        cmd = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "wide")

        def run(deadline: float) -> list[dict[str, Any]]:
            now = time.time()
            return [_pod_row(p, now) for p in self._list_pods(deadline, namespace, selector, cmd)]

        return self._run("pods", cmd, run)

    # ---- logs ----------------------------------------------------------------------------------
    def error_logs(self, namespace: str = "default", selector: str = "app=mistral-service", since_s: int = 300,
                   tail: int = 10, pattern: str = "error", previous: bool = False) -> KubeResult:
        """The seed's `kubectl logs -l SELECTOR --since=5m | grep -i error | tail -10`, for every container.

        Lines are read with kubelet timestamps from every container of every selected pod (and, with
        `previous`, from the last terminated instance of restarted containers), merged in time order.
        JSON lines count as errors by level (error, fatal, critical, ...) or `pattern` in their message;
        plain lines by `pattern` (a case-insensitive regular expression) anywhere. `data["lines"]` holds
        the last `tail`, `data["groups"]` the classes of every matching line in the window.
        """
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        since_s = params.positive_int("since_s", since_s, maximum=7 * 86400)
        tail = params.positive_int("tail", tail, maximum=10_000)
        try:
            rx = re.compile(params.text("pattern", pattern, allow_empty=False), re.IGNORECASE)
        except re.error as exc:
            raise params.ParameterError("pattern", pattern, f"a regular expression ({exc})") from None
        cmd = (self.kubectl("logs", "-n", namespace, "-l", selector, "--all-containers", "--prefix", "--timestamps",
                            f"--since={_duration(since_s)}", "--tail=-1")
               + f" | grep -iE {shlex.quote(pattern)} | tail -{tail}"
               + ("  # and the same with --previous for restarted containers" if previous else ""))

        def run(deadline: float) -> tuple[dict[str, Any], KubeFinding | None]:
            pods = self._list_pods(deadline, namespace, selector, cmd)
            core = self._apis().CoreV1Api(self.api_client)
            targets = []
            for p in pods:
                statuses = {c.get("name"): c for c in (p.get("status") or {}).get("containerStatuses") or []}
                for c in (p.get("spec") or {}).get("containers") or []:
                    targets.append((p["metadata"]["name"], c["name"], False))
                    if previous and int((statuses.get(c["name"]) or {}).get("restartCount") or 0) > 0:
                        targets.append((p["metadata"]["name"], c["name"], True))

            def fetch(target: tuple[str, str, bool]) -> str:
                pod, container, prev = target
                extra = {"previous": True} if prev else {"since_seconds": since_s}
                return self._request(deadline, core, "read_namespaced_pod_log", pod, namespace, container=container,
                                     timestamps=True, text=True, verb="get", resource="pods/log",
                                     namespace=namespace, name=pod, kubectl=cmd, **extra)

            per: list[dict[str, Any]] = []
            findings: list[KubeFinding] = []
            entries: list[dict[str, Any]] = []
            scanned = 0
            if targets:
                pool = ThreadPoolExecutor(max_workers=min(MAX_LOG_REQUESTS, len(targets)), thread_name_prefix="kube-logs")
                futures = {pool.submit(fetch, t): t for t in targets}
                done, _pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.2)
                pool.shutdown(wait=False, cancel_futures=True)
                for fut, (pod, container, prev) in futures.items():
                    row: dict[str, Any] = {"pod": pod, "container": container, "previous": prev, "lines": 0,
                                           "matched": 0, "error": None}
                    per.append(row)
                    if fut not in done:
                        f = self._unreachable(TimeoutError("log read did not finish"), cmd)
                        row["error"] = f.message
                        findings.append(f)
                        continue
                    try:
                        text = fut.result()
                    except _Fail as fail:
                        row["error"] = fail.finding.message
                        if fail.finding.http_status not in (400, 404):  # e.g. a container waiting to start
                            findings.append(fail.finding)
                        continue
                    for raw in text.splitlines():
                        if not raw.strip():
                            continue
                        scanned += 1
                        row["lines"] += 1
                        stamp, _, line = raw.partition(" ")
                        ts = _ts(stamp)
                        if ts is None:  # no kubelet timestamp: the whole thing is the line
                            line = raw
                        if not is_error_line(line, rx):
                            continue
                        row["matched"] += 1
                        msg, code, level, entry = _line_facts(line)
                        if ts is None and entry is not None:
                            ts = _ts(str(_first(entry, ("ts", "time", "timestamp", "@timestamp")) or ""))
                        entries.append({"ts": _iso(ts), "_t": ts or 0.0, "pod": pod, "container": container,
                                        "previous": prev, "level": level, "code": None if code is None else str(code),
                                        "model": entry.get("model") if entry else None, "msg": scrub(msg)[:500],
                                        "error_class": classify_error(msg, code), "line": scrub(line)[:500]})
            entries.sort(key=lambda e: e["_t"])
            for e in entries:
                del e["_t"]
            data = {"lines": entries[-tail:], "matched": len(entries), "scanned": scanned, "since_s": since_s,
                    "tail": tail, "pattern": pattern, "pods": [p["metadata"]["name"] for p in pods],
                    "containers": per, "groups": group_errors(entries), "partial": bool(findings)}
            finding = None
            if findings:
                if len(findings) == len(targets):
                    finding = findings[0]
                else:
                    worst = findings[0]
                    finding = KubeFinding(worst.status, f"{len(findings)} of {len(targets)} container logs could not "
                                                        f"be read; the lines shown are partial. {worst.message}",
                                          worst.http_status, worst.verb, worst.resource, worst.namespace, worst.user,
                                          worst.server, worst.kubectl, worst.detail)
            return data, finding

        return self._run("error_logs", cmd, run, rows_key="lines")

    def group_errors(self, lines: Iterable[str | dict[str, Any]]) -> list[dict[str, Any]]:
        """See the module-level `group_errors`."""
        return group_errors(lines)

    # ---- events ---------------------------------------------------------------------------------
    def events(self, namespace: str = "default", limit: int = 200) -> KubeResult:
        """`kubectl get events --sort-by=.lastTimestamp`: oldest first, the newest `limit` kept.

        The time is lastTimestamp, else eventTime (events written through events.k8s.io have no
        lastTimestamp), else series.lastObservedTime, firstTimestamp, creationTimestamp.
        """
        namespace = params.namespace("namespace", namespace)
        limit = params.positive_int("limit", limit, maximum=10_000)
        cmd = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")

        def run(deadline: float) -> list[dict[str, Any]]:
            core = self._apis().CoreV1Api(self.api_client)
            body = self._request(deadline, core, "list_namespaced_event", namespace, verb="list", resource="events",
                                 namespace=namespace, kubectl=cmd)
            now = time.time()
            rows = []
            for ev in body.get("items") or []:
                t = (_ts(ev.get("lastTimestamp")) or _ts(ev.get("eventTime"))
                     or _ts((ev.get("series") or {}).get("lastObservedTime")) or _ts(ev.get("firstTimestamp"))
                     or _ts((ev.get("metadata") or {}).get("creationTimestamp")))
                inv = ev.get("involvedObject") or {}
                count = ev.get("count") or (ev.get("series") or {}).get("count") or 1
                rows.append({"last_seen": _iso(t), "age_s": None if t is None else round(now - t, 1),
                             "type": ev.get("type"), "reason": ev.get("reason"),
                             "object": f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
                             "message": scrub(str(ev.get("message") or ""))[:1000], "count": int(count),
                             "source": ev.get("reportingComponent") or (ev.get("source") or {}).get("component"),
                             "_t": t or 0.0})
            rows.sort(key=lambda r: r["_t"])
            for r in rows:
                del r["_t"]
            return rows[-limit:]

        return self._run("events", cmd, run)

    # ---- deployment ------------------------------------------------------------------------------
    def _read_deployment(self, deadline: float, namespace: str, name: str, kubectl: str) -> dict[str, Any]:
        apps = self._apis().AppsV1Api(self.api_client)
        return self._request(deadline, apps, "read_namespaced_deployment", name, namespace, verb="get",
                             resource="deployments.apps", namespace=namespace, name=name, kubectl=kubectl)

    def _owned_replica_sets(self, deadline: float, namespace: str, dep: dict[str, Any],
                            kubectl: str) -> list[dict[str, Any]]:
        """The deployment's ReplicaSets: its selector's, owned by its uid (when it has one)."""
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        apps = self._apis().AppsV1Api(self.api_client)
        body = self._request(deadline, apps, "list_namespaced_replica_set", namespace,
                             label_selector=",".join(f"{k}={v}" for k, v in labels.items()),
                             verb="list", resource="replicasets.apps", namespace=namespace, kubectl=kubectl)
        uid = dep["metadata"].get("uid")
        return [rs for rs in body.get("items") or [] if not uid or any(
            o.get("uid") == uid for o in (rs.get("metadata") or {}).get("ownerReferences") or [])]

    def deployment(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """The deployment: replicas, images, revision, conditions and env (secret values never shown).

        Env values whose name looks secret (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, ...) or whose
        value is shaped like one become a fingerprint; `valueFrom` shows the reference, not the value.
        Annotations are not returned (`last-applied-configuration` holds literal env values).
        """
        namespace = params.namespace("namespace", namespace)
        name = _object_name(name)
        cmd = self.kubectl("get", "deployment", name, "-n", namespace, "-o", "yaml") + " # env values redacted"

        def run(deadline: float) -> dict[str, Any]:
            return _deployment_view(self._read_deployment(deadline, namespace, name, cmd))

        return self._run("deployment", cmd, run, rows_key="env")

    def rollout_status(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """`kubectl rollout status deployment/NAME --watch=false`: done or what it is waiting for."""
        namespace = params.namespace("namespace", namespace)
        name = _object_name(name)
        cmd = self.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--watch=false")

        def run(deadline: float) -> dict[str, Any]:
            return _rollout_status(self._read_deployment(deadline, namespace, name, cmd))

        return self._run("rollout_status", cmd, run)

    def revision_history(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """`kubectl rollout history deployment/NAME`, from the deployment's ReplicaSets.

        Each revision: ReplicaSet, created, change cause, images, replicas, whether it is current,
        and what changed from the revision before (images; env names, values only when not secret).
        """
        namespace = params.namespace("namespace", namespace)
        name = _object_name(name)
        cmd = self.kubectl("rollout", "history", f"deployment/{name}", "-n", namespace)

        def run(deadline: float) -> list[dict[str, Any]]:
            dep = self._read_deployment(deadline, namespace, name, cmd)
            current = str(((dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")) or "")
            rows = []
            for rs in self._owned_replica_sets(deadline, namespace, dep, cmd):
                meta = rs.get("metadata") or {}
                ann = meta.get("annotations") or {}
                rev = ann.get("deployment.kubernetes.io/revision")
                if rev is None:
                    continue
                tspec = ((rs.get("spec") or {}).get("template") or {}).get("spec") or {}
                rows.append({"revision": int(rev), "replicaset": meta.get("name"),
                             "created": meta.get("creationTimestamp"),
                             "change_cause": scrub(_redact_assignments(ann.get("kubernetes.io/change-cause") or "")) or None,
                             "images": {c.get("name"): c.get("image") for c in tspec.get("containers") or []},
                             "replicas": int((rs.get("spec") or {}).get("replicas") or 0),
                             "ready": int((rs.get("status") or {}).get("readyReplicas") or 0),
                             "current": str(rev) == current, "_tspec": tspec})
            rows.sort(key=lambda r: r["revision"])
            for prev, row in zip([None] + rows[:-1], rows, strict=True):
                row["changes"] = _template_changes(prev["_tspec"] if prev else None, row["_tspec"])
            for row in rows:
                del row["_tspec"]
            return rows

        return self._run("revision_history", cmd, run)

    # ---- network policies ---------------------------------------------------------------------------
    def manifests(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """The deployment and its ReplicaSets as stored (`kubectl get deployment,rs -o yaml`), redacted.

        For the evidence bundle: the whole objects a reviewer would diff, with Secret-looking env
        values, the last-applied annotation and key-shaped strings replaced by fingerprints.
        """
        from ..redact import redact_object

        namespace = params.namespace("namespace", namespace)
        name = _object_name(name)
        cmd = self.kubectl("get", f"deployment/{name}", "replicasets", "-n", namespace, "-o", "yaml") + \
            " # redacted"

        def run(deadline: float) -> dict[str, Any]:
            dep = self._read_deployment(deadline, namespace, name, cmd)
            owned = self._owned_replica_sets(deadline, namespace, dep, cmd)
            return redact_object({"deployment": dep, "replicasets": owned})

        return self._run("manifests", cmd, run)

    def network_policies(self, namespace: str = "default", selector: str = "app=mistral-service",
                         target_ips: Iterable[str] = ()) -> KubeResult:
        """`kubectl get networkpolicy`, with the ones that could block egress to the Mistral API flagged.

        A policy could block it when it selects the pods (their labels, read from the pods), restricts
        egress, and none of its rules lets TCP 443 out to a public address (or to `target_ips`, when
        the API's addresses are known). Policies add up: egress is blocked only when some policy
        restricts it and none allows it (`data["verdict"]`: blocked, allowed, unrestricted, unknown).
        """
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        targets = [str(ipaddress.ip_address(t)) for t in target_ips]
        cmd = self.kubectl("get", "networkpolicy", "-n", namespace, "-o", "yaml")

        def run(deadline: float) -> dict[str, Any]:
            net = self._apis().NetworkingV1Api(self.api_client)
            body = self._request(deadline, net, "list_namespaced_network_policy", namespace, verb="list",
                                 resource="networkpolicies.networking.k8s.io", namespace=namespace, kubectl=cmd)
            pods = self._list_pods(deadline, namespace, selector, cmd)
            labels = (pods[0]["metadata"].get("labels") or {}) if pods else _labels_from_selector(selector)
            policies = [analyse_policy(p, labels, targets)
                        for p in sorted(body.get("items") or [], key=lambda p: p["metadata"]["name"])]
            restricting = [p for p in policies if p["restricts_egress"]]
            if not restricting:
                verdict = "unrestricted"
                summary = "No NetworkPolicy restricts the pods' egress: it cannot be what blocks the Mistral API."
            elif any(p["allows_mistral"] is True for p in restricting):
                verdict = "allowed"
                names = ", ".join(p["name"] for p in restricting if p["allows_mistral"] is True)
                summary = f"Egress is restricted, and {names} lets TCP 443 out to {MISTRAL_API_HOST}."
            elif any(p["allows_mistral"] is None for p in restricting):
                verdict = "unknown"
                summary = (f"Egress is restricted to specific public ranges: check they hold {MISTRAL_API_HOST}'s "
                           "addresses (pass them as target_ips).")
            else:
                verdict = "blocked"
                summary = (f"Egress to {MISTRAL_API_HOST}:443 is blocked by "
                           f"{', '.join(p['name'] for p in restricting)}: timeouts and connection errors "
                           "to the API are expected.")
            return {"policies": policies, "verdict": verdict, "summary": summary, "pod_labels": labels,
                    "blocking": [p["name"] for p in policies if p["could_block_mistral"]],
                    "target": f"TCP 443 to {', '.join(targets) if targets else 'a public address'} ({MISTRAL_API_HOST})"}

        return self._run("network_policies", cmd, run, rows_key="policies")

    # ---- secret fingerprint ----------------------------------------------------------------------------
    def secret_fingerprint(self, namespace: str = "default", name: str = "mistral-secrets",
                           key: str = "api-key") -> KubeResult:
        """Presence, length and SHA-256 fingerprint of one Secret key; the value never leaves this call."""
        namespace = params.namespace("namespace", namespace)
        name = _object_name(name)
        key = params.text("key", key, allow_empty=False)
        cmd = (self.kubectl("get", "secret", name, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}")
               + " | base64 -d | sha256sum | cut -c1-12")

        def run(deadline: float) -> dict[str, Any]:
            core = self._apis().CoreV1Api(self.api_client)
            body = self._request(deadline, core, "read_namespaced_secret", name, namespace, verb="get",
                                 resource="secrets", namespace=namespace, name=name, kubectl=cmd)
            raw = (body.get("data") or {}).get(key)
            body.clear()
            if raw is None:
                return {"secret": name, "key": key, "present": False, "length": 0, "fingerprint": None}
            try:
                value = base64.b64decode(raw).decode("utf-8").strip()
            except (ValueError, UnicodeDecodeError):
                return {"secret": name, "key": key, "present": True, "length": None, "fingerprint": None,
                        "note": "not valid base64/UTF-8"}
            return {"secret": name, "key": key, "present": bool(value), "length": len(value),
                    "fingerprint": fingerprint(value) if value else None}

        return self._run("secret_fingerprint", cmd, run)


_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _role_for(verb: str | None) -> str:
    """The built-in ClusterRole that grants `verb`: reads come with `view`, writes need `edit`."""
    return "view" if verb in (None, "get", "list", "watch") else "edit"


def _object_name(value: object, param: str = "name") -> str:
    if not isinstance(value, str) or len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise params.ParameterError(param, value, "a Kubernetes object name: lower-case letters, digits, '-' and "
                                                  "'.', e.g. mistral-service")
    return value


# -- views -----------------------------------------------------------------------------------------------
def _pod_status(pod: dict[str, Any]) -> str:
    """kubectl's STATUS column (simplified)."""
    st = pod.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    running = False
    for c in reversed(st.get("containerStatuses") or []):
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"] or {}
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}")
        elif c.get("ready") and "running" in state:
            running = True
    if reason == "Completed" and running:
        reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_row(pod: dict[str, Any], now: float) -> dict[str, Any]:
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = {c.get("name"): c for c in st.get("containerStatuses") or []}
    containers, last_restart = [], None
    for c in spec.get("containers") or []:
        s = statuses.get(c.get("name")) or {}
        state = s.get("state") or {}
        state_name = next(iter(state), "unknown") if state else "unknown"
        last = (s.get("lastState") or {}).get("terminated") or {}
        finished = _ts(last.get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        containers.append({"name": c.get("name"), "image": c.get("image"), "ready": bool(s.get("ready")),
                           "restarts": int(s.get("restartCount") or 0), "state": state_name,
                           "reason": (state.get(state_name) or {}).get("reason") if state else None,
                           "last_exit_reason": last.get("reason"), "last_exit_code": last.get("exitCode"),
                           "last_exit_at": last.get("finishedAt")})
    created = _ts(meta.get("creationTimestamp"))
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "status": _pod_status(pod),
            "phase": st.get("phase"), "ready": f"{sum(c['ready'] for c in containers)}/{len(containers)}",
            "restarts": sum(c["restarts"] for c in containers), "last_restart_at": _iso(last_restart),
            "last_restart_age_s": None if last_restart is None else round(now - last_restart, 1),
            "age_s": None if created is None else round(now - created, 1), "node": spec.get("nodeName"),
            "ip": st.get("podIP"), "containers": containers}


def _deployment_view(dep: dict[str, Any]) -> dict[str, Any]:
    meta, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    tspec = (spec.get("template") or {}).get("spec") or {}
    containers, env_rows = [], []
    for c in tspec.get("containers") or []:
        env = [env_entry(c.get("name", ""), e) for e in c.get("env") or []]
        env_from = []
        for ef in c.get("envFrom") or []:
            src = "secret" if "secretRef" in ef else "configmap" if "configMapRef" in ef else "other"
            ref = (ef.get("secretRef") or ef.get("configMapRef") or {}).get("name")
            env_from.append({"source": src, "name": ref, "prefix": ef.get("prefix") or ""})
        containers.append({"name": c.get("name"), "image": c.get("image"), "env": env, "env_from": env_from})
        env_rows.extend(env)
    ann = meta.get("annotations") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "revision": ann.get("deployment.kubernetes.io/revision"),
            "change_cause": scrub(_redact_assignments(ann.get("kubernetes.io/change-cause") or "")) or None,
            "replicas": spec.get("replicas"), "ready": st.get("readyReplicas") or 0,
            "updated": st.get("updatedReplicas") or 0, "available": st.get("availableReplicas") or 0,
            "generation": meta.get("generation"), "observed_generation": st.get("observedGeneration"),
            "paused": bool(spec.get("paused")), "strategy": (spec.get("strategy") or {}).get("type"),
            "selector": ",".join(f"{k}={v}" for k, v in sel.items()),
            "images": {c["name"]: c["image"] for c in containers}, "containers": containers, "env": env_rows,
            "conditions": [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                            "message": scrub(str(c.get("message") or ""))} for c in st.get("conditions") or []]}


def _rollout_status(dep: dict[str, Any]) -> dict[str, Any]:
    meta, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    name = meta.get("name")
    gen, observed = int(meta.get("generation") or 0), int(st.get("observedGeneration") or 0)
    want = spec.get("replicas", 1)
    updated, replicas = int(st.get("updatedReplicas") or 0), int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    progressing = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {})
    failed = progressing.get("reason") == "ProgressDeadlineExceeded"
    done = False
    if gen > observed:
        message = "Waiting for deployment spec update to be observed..."
    elif failed:
        message = f'error: deployment "{name}" exceeded its progress deadline'
    elif want is not None and updated < int(want):
        message = (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {want} new replicas have '
                   "been updated...")
    elif replicas > updated:
        message = (f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old replicas are pending '
                   "termination...")
    elif available < updated:
        message = (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas are '
                   "available...")
    else:
        done, message = True, f'deployment "{name}" successfully rolled out'
    return {"name": name, "done": done, "failed": failed, "message": message,
            "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"),
            "paused": bool(spec.get("paused")), "generation": gen, "observed_generation": observed,
            "replicas": want, "updated": updated, "ready": int(st.get("readyReplicas") or 0), "available": available}


_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def _redact_assignments(text: str) -> str:
    """`kubectl set env ... SENTRY_TOKEN=abc` in a change cause -> `SENTRY_TOKEN=[REDACTED]`."""
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}=[REDACTED]" if secret_looking(m.group(1), m.group(2)) else m.group(0),
                           text)


def _template_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    if before is None:
        return []
    changes = []
    old_c = {c.get("name"): c for c in before.get("containers") or []}
    new_c = {c.get("name"): c for c in after.get("containers") or []}
    for name in sorted(set(old_c) | set(new_c)):
        if name not in old_c:
            changes.append(f"container {name} added")
            continue
        if name not in new_c:
            changes.append(f"container {name} removed")
            continue
        o, n = old_c[name], new_c[name]
        if o.get("image") != n.get("image"):
            changes.append(f"{name}: image {o.get('image')} -> {n.get('image')}")
        oe = {e.get("name"): env_entry(name, e) for e in o.get("env") or []}
        ne = {e.get("name"): env_entry(name, e) for e in n.get("env") or []}
        for var in sorted(set(oe) | set(ne)):
            a, b = oe.get(var), ne.get(var)
            if a is None:
                changes.append(f"{name}: env {var} added ({b['display']})")  # type: ignore[index]
            elif b is None:
                changes.append(f"{name}: env {var} removed")
            elif (a["display"], a.get("fingerprint")) != (b["display"], b.get("fingerprint")):
                if a["redacted"] or b["redacted"]:
                    changes.append(f"{name}: env {var} changed (value hidden)")
                else:
                    changes.append(f"{name}: env {var} {a['display']} -> {b['display']}")
    return changes


# -- raw routes over the official ApiClient ---------------------------------------------------------------
# Every read here takes the raw JSON (`_preload_content=False`), so the typed API classes add only
# start-up cost: importing `kubernetes.client.api.core_v1_api` builds ~250 pydantic-validated methods
# (0.7 s on this machine) in every fresh kernel. These routes keep the official client's
# configuration, authentication, TLS and ApiException, and call the same paths.
_ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "list_namespaced_pod": ("/api/v1/namespaces/{namespace}/pods", ("namespace",)),
    "read_namespaced_pod_log": ("/api/v1/namespaces/{namespace}/pods/{name}/log", ("name", "namespace")),
    "list_namespaced_event": ("/api/v1/namespaces/{namespace}/events", ("namespace",)),
    "read_namespaced_secret": ("/api/v1/namespaces/{namespace}/secrets/{name}", ("name", "namespace")),
    "read_namespaced_deployment": ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", ("name", "namespace")),
    "list_namespaced_replica_set": ("/apis/apps/v1/namespaces/{namespace}/replicasets", ("namespace",)),
    "list_namespaced_network_policy": ("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
                                       ("namespace",)),
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def send(api_client: Any, method: str, path: str, path_params: dict[str, str], query: list[tuple[str, Any]], *,
         accept: str = "application/json", content_type: str | None = None, body: Any = None,
         timeout_s: float | None = None) -> Any:
    """One request through the official `ApiClient` (its config, auth and TLS); ApiException unless 2xx."""
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}
    _m, url, headers, _b, _p = api_client.param_serialize(method=method, resource_path=path, path_params=path_params,
                                                          query_params=query, header_params=headers,
                                                          auth_settings=["BearerToken"])
    response = api_client.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout_s)
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return response


class _RawApi:
    """Read routes named like the generated API's methods, sent through `ApiClient`."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def __getattr__(self, method: str) -> Any:
        try:
            path, positional = _ROUTES[method]
        except KeyError:
            raise AttributeError(method) from None

        def call(*args: Any, _preload_content: bool = False, _request_timeout: float | None = None,
                 **query: Any) -> Any:
            accept = "text/plain" if method.endswith("_log") else "application/json"
            return send(self.api_client, "GET", path, dict(zip(positional, args, strict=True)),
                        [(_camel(k), v) for k, v in query.items() if v is not None], accept=accept,
                        timeout_s=_request_timeout)

        return call


class _RawApis:
    CoreV1Api = AppsV1Api = NetworkingV1Api = _RawApi


_RAW_APIS = _RawApis()


# -- triage step 4 in one bounded call --------------------------------------------------------------------
def recent_errors(kubeconfig: str = "", context: str = "", namespace: str = "default",
                  selector: str = "app=mistral-service", since_s: int = 300, tail: int = 10,
                  timeout_s: float = 5.0, pattern: str = "error") -> dict[str, Any]:
    """Connect and read the recent error lines and their classes, all within `timeout_s`.

    Returns plain data: status ("ok" or the finding's status), reason (the finding's words),
    finding, kubectl, lines, groups, matched, scanned, partial.
    """
    t0 = time.monotonic()
    cluster = connect(kubeconfig, context, timeout_s)
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
            "elapsed_s": round(time.monotonic() - t0, 3)}
