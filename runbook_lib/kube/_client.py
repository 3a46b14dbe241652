"""Kubernetes transport: connecting, one bounded request, and refusals turned into findings.

Everything else in `kube` (the read views, the log reads, the network-policy analysis and the write
side in `kube.write`) sends its requests through `ClusterClient` and gets the same failure handling:

- 401 (expired or invalid credentials): "re-authenticate with your cloud provider";
- 403: which verb on which resource was refused, and "escalate to an admin";
- unreachable (refused, timed out, DNS, TLS): the section is unavailable, the runbook goes on.

The internal API the other modules use (public names, so the write side need not reach into
private ones): `ClusterClient.from_kubeconfig`, `.request`, `.apis`, `.run`, `.unreachable`,
`.kubectl`; `KubeFailure` (a finding raised inside a bounded call); `object_name`; `send`.

`kubernetes` is imported inside the functions that need it (the verdict path of a notebook must
not pay for it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from .. import params
from ..redact import scrub

UNAUTHORIZED, FORBIDDEN, UNREACHABLE, NOT_FOUND, ERROR = "unauthorized", "forbidden", "unreachable", "not_found", "error"
REAUTH = "re-authenticate with your cloud provider"
ESCALATE = "escalate to an admin"


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


class KubeFailure(Exception):
    """A finding raised inside a bounded call; `ClusterClient.run` (and the write side) turn it back into data."""

    def __init__(self, finding: KubeFinding) -> None:
        super().__init__(finding.message)
        self.finding = finding


# -- parameters ------------------------------------------------------------------------------------
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def object_name(value: object, param: str = "name") -> str:
    """`value` if it is a valid Kubernetes object name, else a ParameterError naming `param` (before any request)."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise params.ParameterError(param, value, "a Kubernetes object name: lower-case letters, digits, '-' and "
                                                  "'.', e.g. mistral-service")
    return value


def _role_for(verb: str | None) -> str:
    """The built-in ClusterRole that grants `verb`: reads come with `view`, writes need `edit`."""
    return "view" if verb in (None, "get", "list", "watch") else "edit"


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
    if not hasattr(api_client, "param_serialize"):
        # kubernetes <= 36 (the image and dev pin <37 for botocore's python-dateutil<3): the older
        # generator's call_api serialises and raises ApiException itself; `.data` reads the raw body.
        # Booleans as the API spells them (the old serialiser sends Python's "True").
        query = [(k, ("true" if v else "false") if isinstance(v, bool) else v) for k, v in query]
        return api_client.call_api(path, method, path_params=path_params, query_params=query,
                                   header_params=headers, body=body, auth_settings=["BearerToken"],
                                   _preload_content=False, _return_http_data_only=True,
                                   _request_timeout=timeout_s)
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


# -- kubeconfig ----------------------------------------------------------------------------------------
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


IN_CLUSTER = "in-cluster"


def config_source(kubeconfig: str = "") -> tuple[str, str]:
    """(path, source) with kubectl's precedence: the `kubeconfig` parameter, then $KUBECONFIG (a
    colon-separated list, merged), then ~/.kube/config when it exists, and only when none of them
    is there, inside a pod, the in-cluster service account ("", "in-cluster"). Outside a pod with
    nothing configured: ~/.kube/config (its absence becomes the finding)."""
    if kubeconfig:
        return kubeconfig, "parameter"
    env = os.environ.get("KUBECONFIG", "")
    if env.strip(os.pathsep):
        return env, "$KUBECONFIG"
    home = os.path.expanduser("~/.kube/config")
    if os.path.isfile(home) or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return home, "~/.kube/config"
    return "", IN_CLUSTER


# -- the transport -------------------------------------------------------------------------------------
class ClusterClient:
    """One cluster's connection: bounded requests, and failures as `KubeFinding`s (the base of `kube.Cluster`)."""

    config_source: str = ""  # where the configuration came from: parameter, $KUBECONFIG, ~/.kube/config, in-cluster

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

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str = "", context: str = "", timeout_s: float = 5.0) -> Self:
        """Connect from a kubeconfig (path and context) chosen as kubectl does (`config_source`: the
        parameter, $KUBECONFIG, ~/.kube/config), or in-cluster config only inside a pod with none of them.

        Never raises for a bad or expired configuration: the returned object then carries a `finding`
        and every read returns it. Loading is bounded by `timeout_s` too (credential plugins can hang).
        """
        timeout_s = params.timeout("timeout_s", timeout_s)
        kubeconfig = params.text("kubeconfig", kubeconfig, maximum=4096)
        context = params.text("context", context)
        path, source = config_source(kubeconfig)
        in_cluster = source == IN_CLUSTER
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
            failed = cls(None, kubeconfig=shown_path, context=context, timeout_s=timeout_s, finding=finding,
                         in_cluster=in_cluster)
            failed.config_source = source
            return failed
        if "error" in box:
            failed = cls(None, kubeconfig=shown_path, context=context, timeout_s=timeout_s, in_cluster=in_cluster,
                         finding=_config_finding(box["error"], path, context, in_cluster))
            failed.config_source = source
            return failed
        made = cls(box["client"], kubeconfig=shown_path, context=box.get("context", context), timeout_s=timeout_s,
                   server=str(box["cfg"].host), in_cluster=in_cluster, user=box.get("user", ""))
        made.config_source = source
        return made

    def close(self) -> None:
        if self.api_client is not None:
            try:
                self.api_client.close()
            except Exception:  # noqa: BLE001 - closing a pool must not fail a runbook
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kubectl(self, *args: str, portable: bool = False) -> str:
        """The equivalent kubectl command, with this cluster's --kubeconfig and --context.

        `portable`: without --kubeconfig (a path on this machine), for commands kept in the record
        and run later by someone else, e.g. an undo: the context and namespace name the target.
        """
        parts = ["kubectl"]
        if self.kubeconfig and not portable:
            parts += ["--kubeconfig", self.kubeconfig]
        if self.context and not self.in_cluster:
            parts += ["--context", self.context]
        return shlex.join(parts + list(args))

    def apis(self) -> Any:
        """`CoreV1Api` & co. as thin routes over the official `ApiClient` (see `_RawApi`)."""
        return _RAW_APIS

    def request(self, deadline: float, api: Any, method: str, *args: Any, verb: str, resource: str,
                namespace: str | None = None, name: str | None = None, text: bool = False, kubectl: str = "",
                **kwargs: Any) -> Any:
        """One API call, bounded by what is left of `deadline`; a `KubeFailure` with a finding on failure.

        `verb`, `resource`, `namespace` and `name` only word the finding (a 403 names what was refused).
        """
        if self.finding is not None:
            raise KubeFailure(self.finding)
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            raise KubeFailure(self.unreachable(TimeoutError("deadline reached before the request"), kubectl))
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
                raise KubeFailure(self.unreachable(exc, kubectl)) from None
            raise KubeFailure(self._api_finding(exc, verb, resource, namespace, name, kubectl)) from None
        except Exception as exc:  # noqa: BLE001 - urllib3/socket errors: no answer in time
            raise KubeFailure(self.unreachable(exc, kubectl)) from None
        if text:
            return body.decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            raise KubeFailure(KubeFinding(ERROR, f"The API server at {self.server} answered {resource} with something "
                                                 "that is not JSON: is this really a Kubernetes API server?",
                                          server=self.server, kubectl=kubectl)) from None

    def unreachable(self, exc: BaseException, kubectl: str) -> KubeFinding:
        """The finding for no (or no usable) answer: the section is unavailable, the runbook goes on."""
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

    def run(self, name: str, kubectl: str, fn: Callable[[float], Any], rows_key: str | None = None) -> KubeResult:
        """`fn(deadline)` under one deadline of `timeout_s`, as a `KubeResult` (a `KubeFailure` becomes its finding).

        `fn` may return `(data, finding)` for partial data with a finding.
        """
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
        except KubeFailure as fail:
            data, finding = None, fail.finding
        if finding is not None and not finding.kubectl:
            finding.kubectl = kubectl
        return KubeResult(name, kubectl, data, finding, time.monotonic() - t0, rows_key)
