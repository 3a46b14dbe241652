"""Kubernetes, write side: the seed runbook's mitigations, dry run first, each change recorded.

- `plan_env`: set, change or remove deployment env vars (`RATE_LIMIT_MODE=queue`,
  `MAX_CONCURRENT_REQUESTS=3`, `MISTRAL_FALLBACK=true`, `MISTRAL_TIMEOUT=...`), as `kubectl set env`;
- `rotate_secret`: put a new API key into the Secret; the key is read from the environment variable
  *named* by `new_key_env` (never a parameter: papermill records parameters);
- `rollout_restart`: the `kubectl.kubernetes.io/restartedAt` pod-template annotation, as kubectl does;
- `rollout_undo`: the previous (or a given) revision's pod template copied into the deployment, as
  `kubectl rollout undo` does;
- `wait_for_rollout`: `kubectl rollout status`, polled until done, failed or the bound.

Every function is a dry run unless `apply_changes=True`: the write is sent with `dryRun=All` (the
API server validates and answers, stores nothing) and the `Change` shows the diff (changed fields
only, before -> after) and the equivalent `kubectl` command. An applied change is read back and
verified (and its rollout waited for, within the same bound); one that did not take says so.
Refusals become the same `KubeFinding`s as the read side (401 re-authenticate, 403 escalate naming
the verb and resource, unreachable). Every call is bounded by `timeout_s` (default: the cluster's).
Secret values never appear in a `Change`: only their fingerprint and length.

Every write is sent with `fieldManager=mistral-runbooks` and sets the `kubernetes.io/change-cause`
annotation: the incident id, the `operator` text and the identity the API server gives the
credentials (`whoami`: a SelfSubjectReview; both kept on the `Change` as `who` and `identity`).
The printed `kubectl` is the exact equivalent, tested with the real kubectl (tests/test_kubectl_real.py);
a Secret that External Secrets, the Secrets Store CSI driver or Sealed Secrets writes is not patched
(`MANAGED_ELSEWHERE`: the finding says where the key must be rotated).

Requests, deadlines and findings come from the read side's documented internal API
(`Cluster.request`, `.apis`, `.read_deployment`, `.owned_replica_sets`; `KubeFailure`,
`object_name`, `rollout_status_of`, `env_entry`), so both sides fail in the same words.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import params
from .._time import iso_z
from ..redact import secret_looking
from ..secrets import fingerprint, read_secret
from . import Cluster
from ._client import ERROR, ESCALATE, FORBIDDEN, NOT_FOUND, KubeFailure, KubeFinding, KubeResult, object_name, send
from .read import env_entry, rollout_status_of

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
FIELD_MANAGER = "mistral-runbooks"  # managedFields names us as the writer of what we change
NOT_DONE = "not_done"  # finding status: the change was sent but did not take (in time)
POLL_S = 0.25

_SMP = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_WRITE_ROUTES: dict[str, tuple[str, str]] = {
    "patch_namespaced_deployment": ("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"),
    "patch_namespaced_secret": ("PATCH", "/api/v1/namespaces/{namespace}/secrets/{name}"),
}
_DEPLOYMENTS, _SECRETS = "deployments.apps", "secrets"


class _WriteApi:
    """Write routes over the official `ApiClient`, like the read routes in `kube._client` (no generated API classes)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def __getattr__(self, method: str) -> Any:
        try:
            http_method, path = _WRITE_ROUTES[method]
        except KeyError:
            raise AttributeError(method) from None

        def call(name: str, namespace: str, *, body: Any, content_type: str = _SMP, dry_run: bool = True,
                 _preload_content: bool = False, _request_timeout: float | None = None) -> Any:
            query = [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if dry_run else [])
            return send(self.api_client, http_method, path, {"name": name, "namespace": namespace}, query,
                        content_type=content_type, body=body, timeout_s=_request_timeout)

        return call


# -- the record -----------------------------------------------------------------------------------------
@dataclass
class Change:
    """One mitigation, dry run or applied: what, on what, the diff, how to undo it, whether it took."""

    action: str
    target: str
    kubectl: str
    undo: str = ""
    diff: list[dict[str, Any]] = field(default_factory=list)
    applied: bool = False
    dry_run_ok: bool = False
    verified: bool | None = None  # None: not applied, so nothing to verify
    at: str = ""
    who: str = ""  # the operator's words, else the kubeconfig user (kept for the record's "by")
    identity: str = ""  # who the API server says the credentials are (SelfSubjectReview), "" if it cannot say
    identity_source: str = ""  # "SelfSubjectReview", or why there is none
    incident: str = ""
    change_cause: str = ""  # the kubernetes.io/change-cause annotation the change carries
    field_manager: str = FIELD_MANAGER
    finding: KubeFinding | None = None
    revision_before: str | None = None
    revision_after: str | None = None
    rollout: dict[str, Any] | None = None
    inverse: dict[str, str | None] | None = None  # plan_env: the changes that restore the old values
    note: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """No finding: the dry run passed, or the change was applied and verified."""
        return self.finding is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["finding"] = self.finding.to_dict() if self.finding else None
        d["ok"] = self.ok
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


def _who(cluster: Cluster, operator: str) -> str:
    """The `operator` argument, else the kubeconfig user of the context, else the context name."""
    operator = params.text("operator", operator)
    if operator.strip():
        return operator.strip()
    if cluster.in_cluster:
        return "in-cluster service account"
    return cluster.user or cluster.context or "unknown"


_SSR_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def whoami(cluster: Cluster, deadline: float) -> tuple[str, str]:
    """(username, source): who the API server says these credentials are, by a SelfSubjectReview
    (`kubectl auth whoami`, authentication.k8s.io/v1, Kubernetes 1.28+). Servers without it (404),
    or any failure: ("", why). Asked once per connection; it stores nothing on the server."""
    cached = getattr(cluster, "_whoami", None)
    if cached is not None:
        return cached
    if cluster.api_client is None:
        return "", "no connection"
    from kubernetes.client.exceptions import ApiException

    left = deadline - time.monotonic()
    if left <= 0.05:
        return "", "no time left to ask the API server"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        resp = send(cluster.api_client, "POST", _SSR_PATH, {}, [], content_type="application/json", body=body,
                    timeout_s=min(left, cluster.timeout_s))
        import json as _json

        user = ((_json.loads(resp.data) or {}).get("status") or {}).get("userInfo") or {}
        result = (str(user.get("username") or ""), "SelfSubjectReview")
    except ApiException as exc:
        why = ("the API server has no SelfSubjectReview (before Kubernetes 1.28)" if exc.status == 404
               else f"SelfSubjectReview answered {exc.status}")
        result = ("", why)
    except Exception as exc:  # noqa: BLE001 - the identity is for the record; the change does not depend on it
        result = ("", f"SelfSubjectReview failed: {type(exc).__name__}")
    cluster._whoami = result  # type: ignore[attr-defined]
    return result


def _cause(change: Change, what: str) -> str:
    """The kubernetes.io/change-cause text: incident, what, the operator and the authenticated identity."""
    who = change.who + (f" (as {change.identity})" if change.identity and change.identity != change.who else "")
    return f"{'incident ' + change.incident if change.incident else 'no incident id'}: {what} by {who} via mistral-runbooks"


def _incident(incident: object) -> str:
    text = params.text("incident", incident if incident is not None else "", maximum=200)
    return text.strip()


def _annotate_cmd(cluster: Cluster, kind_name: str, namespace: str, cause: str, portable: bool = False) -> str:
    return cluster.kubectl("annotate", kind_name, "-n", namespace, "--overwrite", f"--field-manager={FIELD_MANAGER}",
                           f"{CHANGE_CAUSE}={cause}", portable=portable)


def _timeout(cluster: Cluster, timeout_s: float | None) -> float:
    return params.timeout("timeout_s", cluster.timeout_s if timeout_s is None else timeout_s)


def _write_finding(f: KubeFinding) -> KubeFinding:
    """A refused write must say "escalate" (kube's finding names the role that grants the verb)."""
    if f.status == FORBIDDEN:
        if ESCALATE not in f.message.lower():
            f.message += f" {ESCALATE.capitalize()}."
    return f


def _run(cluster: Cluster, change: Change, timeout_s: float | None, fn: Any) -> Change:
    t0 = time.monotonic()
    deadline = t0 + _timeout(cluster, timeout_s)
    try:
        if cluster.finding is not None:
            raise KubeFailure(KubeFinding(**dict(cluster.finding.to_dict(), kubectl=change.kubectl)))
        change.identity, change.identity_source = whoami(cluster, deadline)
        fn(deadline)
    except KubeFailure as fail:
        change.finding = _write_finding(fail.finding)
        if not change.finding.kubectl:
            change.finding.kubectl = change.kubectl
    change.elapsed_s = time.monotonic() - t0
    return change


def _read_dep(cluster: Cluster, deadline: float, namespace: str, name: str, cmd: str) -> dict[str, Any]:
    return cluster.read_deployment(deadline, namespace, name, cmd)


def _patch(cluster: Cluster, deadline: float, kind: str, namespace: str, name: str, body: Any, *, dry_run: bool,
           cmd: str, content_type: str = _SMP) -> dict[str, Any]:
    method, resource = (("patch_namespaced_deployment", _DEPLOYMENTS) if kind == "deployment"
                        else ("patch_namespaced_secret", _SECRETS))
    return cluster.request(deadline, _WriteApi(cluster.api_client), method, name, namespace, body=body,
                           content_type=content_type, dry_run=dry_run, verb="patch", resource=resource,
                           namespace=namespace, name=name, kubectl=cmd)


def _revision(dep: dict[str, Any]) -> str | None:
    return ((dep.get("metadata") or {}).get("annotations") or {}).get(REVISION)


def _tspec(dep_or_rs: dict[str, Any]) -> dict[str, Any]:
    return ((dep_or_rs.get("spec") or {}).get("template")) or {}


def _template_diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Changed fields of two pod templates: annotations, images, env (secret-looking values hidden)."""
    out: list[dict[str, Any]] = []
    ba = (before.get("metadata") or {}).get("annotations") or {}
    aa = (after.get("metadata") or {}).get("annotations") or {}
    for k in sorted(set(ba) | set(aa)):
        if ba.get(k) != aa.get(k):
            out.append({"field": f"spec.template.metadata.annotations[{k}]", "before": ba.get(k), "after": aa.get(k)})
    bc = {c.get("name"): c for c in (before.get("spec") or {}).get("containers") or []}
    ac = {c.get("name"): c for c in (after.get("spec") or {}).get("containers") or []}
    for cname in sorted(set(bc) | set(ac), key=str):
        b, a = bc.get(cname) or {}, ac.get(cname) or {}
        if b.get("image") != a.get("image"):
            out.append({"field": f"containers[{cname}].image", "before": b.get("image"), "after": a.get("image")})
        be = {e.get("name"): env_entry(cname, e) for e in b.get("env") or []}
        ae = {e.get("name"): env_entry(cname, e) for e in a.get("env") or []}
        for var in sorted(set(be) | set(ae), key=str):
            x, y = be.get(var), ae.get(var)
            key = lambda e: None if e is None else (e["display"], e.get("fingerprint"))  # noqa: E731
            if key(x) != key(y):
                out.append({"field": f"containers[{cname}].env[{var}]", "before": x["display"] if x else None,
                            "after": y["display"] if y else None})
    return out


# -- rollout status ---------------------------------------------------------------------------------------
def _wait(cluster: Cluster, deadline: float, namespace: str, name: str, cmd: str) -> dict[str, Any]:
    """Poll until done or failed or `deadline`; the last status, with `waited_s`."""
    t0 = time.monotonic()
    while True:
        status = rollout_status_of(_read_dep(cluster, deadline, namespace, name, cmd))
        left = deadline - time.monotonic()
        if status["done"] or status["failed"] or left <= POLL_S:
            status["waited_s"] = round(time.monotonic() - t0, 3)
            return status
        time.sleep(min(POLL_S, left - POLL_S))


def _not_done(status: dict[str, Any], bound: float, cmd: str) -> KubeFinding:
    return KubeFinding(NOT_DONE, f"The rollout did not complete within {bound:g} s: {status['message']} The change "
                                 "was applied but has not taken yet: check the pods and events, then "
                                 f"`{cmd}`.", kubectl=cmd)


def wait_for_rollout(cluster: Cluster, namespace: str = "default", name: str = "mistral-service",
                     timeout_s: float = 60.0) -> KubeResult:
    """`kubectl rollout status deployment/NAME --timeout=Ns`: polls until done, failed or `timeout_s`."""
    namespace = params.namespace("namespace", namespace)
    name = object_name(name)
    timeout_s = params.timeout("timeout_s", timeout_s)
    cmd = cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, f"--timeout={timeout_s:g}s")
    t0 = time.monotonic()
    if cluster.finding is not None:
        return KubeResult("wait_for_rollout", cmd, None, KubeFinding(**dict(cluster.finding.to_dict(), kubectl=cmd)))
    try:
        status = _wait(cluster, t0 + timeout_s, namespace, name, cmd)
        finding = None if status["done"] else _not_done(status, timeout_s, cmd)
    except KubeFailure as fail:
        status, finding = None, fail.finding
    return KubeResult("wait_for_rollout", cmd, status, finding, time.monotonic() - t0)


def _finish_deployment(cluster: Cluster, change: Change, deadline: float, bound: float, namespace: str, name: str,
                       check: Any) -> None:
    """After an applied write: read back, `check(dep)` -> problem or "", then wait for the rollout."""
    status_cmd = cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace)
    dep = _read_dep(cluster, deadline, namespace, name, status_cmd)
    change.revision_after = _revision(dep)
    problem = check(dep)
    if problem:
        change.verified = False
        change.finding = KubeFinding(NOT_DONE, f"The change was sent but did not take: {problem}",
                                     kubectl=change.kubectl)
        return
    status = _wait(cluster, deadline, namespace, name, status_cmd)
    change.rollout = status
    change.revision_after = status.get("revision") or change.revision_after
    change.verified = bool(status["done"])
    if not status["done"]:
        change.finding = _not_done(status, bound, status_cmd)


# -- env ---------------------------------------------------------------------------------------------------
def _env_arg(var: str, value: str | None) -> str:
    if value is None:
        return f"{var}-"
    if secret_looking(var, value):
        return f"{var}=[REDACTED]"
    return f"{var}={value}"


def _env_changes(changes: object) -> dict[str, str | None]:
    """`plan_env`'s `changes`, checked before any request: env var names -> str (set) or None (remove)."""
    if not isinstance(changes, dict) or not changes:
        raise params.ParameterError("changes", changes, "a non-empty dict of env var name -> value (str) or None "
                                                        "to remove it, e.g. {'MAX_CONCURRENT_REQUESTS': '3'}")
    clean: dict[str, str | None] = {}
    for var, value in changes.items():
        params.env_var_name("changes", var)
        if value is not None and not isinstance(value, str):
            raise params.ParameterError("changes", f"{var}=<{type(value).__name__}>", "string values (or None)")
        clean[var] = value
    return clean


def plan_env(cluster: Cluster, namespace: str, name: str, changes: dict[str, str | None], container: str | None = None,
             *, apply_changes: bool = False, operator: str = "", timeout_s: float | None = None,
             incident: str = "") -> Change:
    """`kubectl set env deployment/NAME -c CONTAINER K=V K2-`: set (str) or remove (None) env vars.

    `container` defaults to the one that already has one of the variables, else the first. Variables
    that come from a Secret or ConfigMap (`valueFrom`) are refused: change their source instead.
    The undo command and `inverse` restore the old values (or remove variables that were absent).
    """
    namespace = params.namespace("namespace", namespace)
    name = object_name(name)
    clean = _env_changes(changes)
    if container is not None:
        params.text("container", container, allow_empty=False)
    change = Change("set env", f"deployment/{name} -n {namespace}", "", at=iso_z(), who=_who(cluster, operator),
                    incident=_incident(incident))

    def base(cname: str, mapping: dict[str, str | None], portable: bool = False) -> str:
        return cluster.kubectl("set", "env", f"deployment/{name}", "-n", namespace, "-c", cname,
                               *[_env_arg(k, v) for k, v in mapping.items()], f"--field-manager={FIELD_MANAGER}",
                               portable=portable)

    change.kubectl = base(container or "<container>", clean)

    def run(deadline: float) -> None:
        dep = _read_dep(cluster, deadline, namespace, name, change.kubectl)
        change.revision_before = _revision(dep)
        containers = (_tspec(dep).get("spec") or {}).get("containers") or []
        if container is not None:
            target = next((c for c in containers if c.get("name") == container), None)
            if target is None:
                has = ", ".join(str(c.get("name")) for c in containers)
                raise KubeFailure(KubeFinding(NOT_FOUND, f'Container "{container}" is not in deployment/{name} (it has '
                                                         f'{has}).', verb="get", resource=_DEPLOYMENTS,
                                              namespace=namespace))
        else:
            target = next((c for c in containers if any(e.get("name") in clean for e in c.get("env") or [])),
                          containers[0] if containers else None)
            if target is None:
                raise KubeFailure(KubeFinding(ERROR, f"deployment/{name} has no containers.", namespace=namespace))
        cname = str(target["name"])
        change.kubectl = base(cname, clean)
        old = {e.get("name"): e for e in target.get("env") or []}
        for var in clean:
            if var in old and old[var].get("valueFrom"):
                shown = env_entry(cname, old[var])["display"]
                raise params.ParameterError("changes", var, f"a variable with a literal value: {var} is {shown}; "
                                                            "change its Secret/ConfigMap instead")
        inverse: dict[str, str | None] = {}
        env_patch: list[dict[str, Any]] = []
        for var, value in clean.items():
            before = old[var].get("value", "") if var in old else None
            if before == value:
                continue
            inverse[var] = before
            env_patch.append({"name": var, "$patch": "delete"} if value is None else {"name": var, "value": value})
        if not env_patch:
            change.dry_run_ok, change.note = True, "nothing to change: the variables already have these values"
            change.verified = None
            return
        change.inverse = inverse
        change.undo = base(cname, inverse, portable=True)
        change.change_cause = _cause(change, "set env " + " ".join(_env_arg(k, v) for k, v in clean.items())
                                     + f" on container {cname}")
        change.kubectl = (base(cname, clean) + " && "
                          + _annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause))
        body = {"metadata": {"annotations": {CHANGE_CAUSE: change.change_cause}},
                "spec": {"template": {"spec": {"containers": [{"name": cname, "env": env_patch}]}}}}
        dry = _patch(cluster, deadline, "deployment", namespace, name, body, dry_run=True, cmd=change.kubectl)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        _patch(cluster, deadline, "deployment", namespace, name, body, dry_run=False, cmd=change.kubectl)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            c = next((c for c in (_tspec(now).get("spec") or {}).get("containers") or [] if c.get("name") == cname), {})
            env = {e.get("name"): e.get("value", "") for e in c.get("env") or []}
            wrong = [v for v, want in clean.items() if (env.get(v) if v in env else None) != want]
            return f"read back, {', '.join(wrong)} differ(s) from what was set" if wrong else ""

        _finish_deployment(cluster, change, deadline, _timeout(cluster, timeout_s), namespace, name, check)

    return _run(cluster, change, timeout_s, run)


# -- secret ------------------------------------------------------------------------------------------------
MANAGED_ELSEWHERE = "managed_elsewhere"  # finding status: the Secret is written by a controller from another store


def _patch_recipe(cluster: Cluster, secret: str, namespace: str, key: str, env_var: str, cause: str,
                  portable: bool = False) -> str:
    """A shell pipeline that merge-patches `key` from `$env_var`: the key reaches kubectl on stdin
    (printf is a shell builtin), never in any process's argv nor in an annotation
    (`kubectl apply` would copy it into last-applied-configuration)."""
    fmt = '{"metadata":{"annotations":{%s:%s}},"data":{%s:"%s"}}'
    value = f'"$(printf %s "${env_var}" | base64 | tr -d \'\\n\')"'
    return (f'test -n "${env_var}" && printf {shlex.quote(fmt)} {shlex.quote(json.dumps(CHANGE_CAUSE))} '
            f"{shlex.quote(json.dumps(cause))} {shlex.quote(json.dumps(key))} {value} | "
            + cluster.kubectl("patch", "secret", secret, "-n", namespace, "--type=merge",
                              f"--field-manager={FIELD_MANAGER}", "--patch-file=/dev/stdin", portable=portable))


def _managed_elsewhere(cluster: Cluster, deadline: float, meta: dict[str, Any], secret: str, key: str,
                       namespace: str, cmd: str) -> KubeFinding | None:
    """A finding when a controller writes this Secret from another store (a patch would be undone at its next sync):
    External Secrets Operator (ownerReferences kind ExternalSecret, reconcile.external-secrets.io/* labels or
    annotations), the Secrets Store CSI driver (secrets-store.csi.k8s.io/managed), Sealed Secrets."""
    owners = meta.get("ownerReferences") or []
    marks = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
    eso = next((o for o in owners if o.get("kind") == "ExternalSecret"), None)
    if eso or any(k.startswith("reconcile.external-secrets.io/") for k in marks) \
            or marks.get("app.kubernetes.io/managed-by") == "external-secrets":
        es_name = (eso or {}).get("name") or secret
        where = _external_secret_ref(cluster, deadline, (eso or {}).get("apiVersion") or "external-secrets.io/v1beta1",
                                     namespace, es_name, key)
        return KubeFinding(MANAGED_ELSEWHERE, f"secret/{secret} is written by the External Secrets Operator from "
                                              f'ExternalSecret "{es_name}": a patch here would be overwritten at its next '
                                              f"refresh. Rotation refused. Rotate the key where it comes from: {where}; "
                                              "then make the operator refresh now: "
                                              f"`kubectl annotate externalsecret {es_name} -n {namespace} "
                                              "force-sync=$(date +%s) --overwrite`, and restart the deployment.",
                           resource="externalsecrets.external-secrets.io", namespace=namespace, kubectl=cmd)
    csi = next((o for o in owners if o.get("kind") == "SecretProviderClassPodStatus"), None)
    if csi or str(marks.get("secrets-store.csi.k8s.io/managed", "")).lower() == "true":
        return KubeFinding(MANAGED_ELSEWHERE, f"secret/{secret} is synced by the Secrets Store CSI driver "
                                              "(secrets-store.csi.k8s.io/managed) from an external provider: a patch "
                                              "here would be overwritten at the next sync. Rotation refused. Rotate "
                                              "the key in the provider the SecretProviderClass names (its "
                                              "spec.provider and spec.parameters: Vault path, AWS/GCP/Azure secret "
                                              "name); the driver syncs it at its rotation poll "
                                              "(--enable-secret-rotation) or when the pods restart.",
                           resource="secretproviderclasses.secrets-store.csi.x-k8s.io", namespace=namespace,
                           kubectl=cmd)
    sealed = next((o for o in owners if o.get("kind") == "SealedSecret"), None)
    if sealed:
        return KubeFinding(MANAGED_ELSEWHERE, f'secret/{secret} is unsealed from SealedSecret "{sealed.get("name")}": '
                                              "a patch here would be overwritten. Rotation refused. Seal the new key "
                                              "with `kubeseal` into that SealedSecret (in git) and apply it.",
                           resource="sealedsecrets.bitnami.com", namespace=namespace, kubectl=cmd)
    return None


def _external_secret_ref(cluster: Cluster, deadline: float, api_version: str, namespace: str, name: str,
                         key: str) -> str:
    """Where the ExternalSecret reads `key`: its store and remote ref, read if we may (else the fields to look at)."""
    generic = (f'ExternalSecret "{name}" spec.data[secretKey={key}].remoteRef (or spec.dataFrom) in the store its '
               "spec.secretStoreRef names")
    if "/" not in api_version or time.monotonic() >= deadline:
        return generic
    try:
        resp = send(cluster.api_client, "GET", f"/apis/{api_version}/namespaces/{{namespace}}/externalsecrets/{{name}}",
                    {"namespace": namespace, "name": name}, [],
                    timeout_s=max(0.05, min(deadline - time.monotonic(), cluster.timeout_s)))
        es = json.loads(resp.data)
    except Exception:  # noqa: BLE001 - the refusal stands; only its detail is less precise
        return generic
    spec = es.get("spec") or {}
    store = spec.get("secretStoreRef") or {}
    store_txt = f'{store.get("kind") or "SecretStore"} "{store.get("name", "?")}"'
    for item in spec.get("data") or []:
        if item.get("secretKey") == key:
            ref = item.get("remoteRef") or {}
            prop = f", property {ref['property']}" if ref.get("property") else ""
            return f'{store_txt}, remote key "{ref.get("key", "?")}"{prop} (ExternalSecret "{name}" spec.data)'
    if spec.get("dataFrom"):
        return f'{store_txt}, the remote secret spec.dataFrom names (ExternalSecret "{name}")'
    return f'{store_txt} (ExternalSecret "{name}")'


def rotate_secret(cluster: Cluster, namespace: str = "default", secret: str = "mistral-secrets", key: str = "api-key",
                  new_key_env: str = "NEW_MISTRAL_API_KEY", *, apply_changes: bool = False, operator: str = "",
                  timeout_s: float | None = None, incident: str = "") -> Change:
    """Put the key held by the environment variable named `new_key_env` into `secret`/`key`.

    Only fingerprints and lengths are recorded. Pods read the key when they start: follow with
    `rollout_restart` for the deployment to use it. A Secret that a controller writes from another
    store (External Secrets Operator, Secrets Store CSI driver, Sealed Secrets) is not patched: the
    finding says where the key must be rotated instead.
    """
    namespace = params.namespace("namespace", namespace)
    secret = object_name(secret, "secret")
    key = params.text("key", key, allow_empty=False)
    new_key_env = params.env_var_name("new_key_env", new_key_env)
    ref = read_secret(new_key_env)
    if not ref.present:
        raise params.ParameterError("new_key_env", new_key_env, "the name of an environment variable that holds the "
                                                                "new key (it is unset or empty)")
    new_value = ref.reveal() or ""
    change = Change("rotate secret", f"secret/{secret}[{key}] -n {namespace}", "", at=iso_z(),
                    who=_who(cluster, operator), incident=_incident(incident),
                    note="pods read the key when they start: rollout restart the deployment for it to take effect")
    change.kubectl = _patch_recipe(cluster, secret, namespace, key, new_key_env, _cause(change, f"rotate {key}"))
    new_desc = f"{ref.fingerprint}, {ref.length} chars"

    def run(deadline: float) -> None:
        change.change_cause = _cause(change, f"rotate secret key {key}")
        change.kubectl = cmd = _patch_recipe(cluster, secret, namespace, key, new_key_env, change.change_cause)
        core = cluster.apis().CoreV1Api(cluster.api_client)
        cur = cluster.request(deadline, core, "read_namespaced_secret", secret, namespace, verb="get",
                              resource=_SECRETS, namespace=namespace, name=secret, kubectl=cmd)
        raw = (cur.get("data") or {}).get(key)
        meta = dict(cur.get("metadata") or {})
        cur.clear()
        managed = _managed_elsewhere(cluster, deadline, meta, secret, key, namespace, cmd)
        if managed is not None:
            raise KubeFailure(managed)
        old_desc = None
        if raw is not None:
            try:
                old = base64.b64decode(raw).decode("utf-8").strip()
                old_desc = f"{fingerprint(old)}, {len(old)} chars"
                old = ""
            except (ValueError, UnicodeDecodeError):
                old_desc = "not valid base64/UTF-8"
        undo_cause = _cause(change, f"undo: restore the previous secret key {key}")
        change.undo = ("restore the previous key " + (f"({old_desc}) " if old_desc else "")
                       + "from your secret manager into $OLD_MISTRAL_API_KEY, then: "
                       + _patch_recipe(cluster, secret, namespace, key, "OLD_MISTRAL_API_KEY", undo_cause,
                                       portable=True))
        if old_desc == new_desc:
            change.dry_run_ok, change.note = True, "nothing to change: the Secret already holds this key"
            return
        change.diff = [{"field": f"data[{key}]", "before": old_desc, "after": new_desc}]
        body = {"metadata": {"annotations": {CHANGE_CAUSE: change.change_cause}},
                "data": {key: base64.b64encode(new_value.encode("utf-8")).decode("ascii")}}
        dry = _patch(cluster, deadline, "secret", namespace, secret, body, dry_run=True, cmd=cmd, content_type=_MERGE)
        change.dry_run_ok = (dry.get("data") or {}).get(key) == body["data"][key]
        dry.clear()
        if not apply_changes:
            return
        _patch(cluster, deadline, "secret", namespace, secret, body, dry_run=False, cmd=cmd, content_type=_MERGE).clear()
        change.applied = True
        back = cluster.request(deadline, core, "read_namespaced_secret", secret, namespace, verb="get",
                               resource=_SECRETS, namespace=namespace, name=secret, kubectl=cmd)
        stored = (back.get("data") or {}).get(key)
        back.clear()
        change.verified = stored == body["data"][key]
        if not change.verified:
            change.finding = KubeFinding(NOT_DONE, f"The new key was sent, but secret/{secret} does not hold it when "
                                                   "read back: rotation did not take.", kubectl=cmd)

    return _run(cluster, change, timeout_s, run)


# -- rollouts ------------------------------------------------------------------------------------------------
def rollout_restart(cluster: Cluster, namespace: str = "default", name: str = "mistral-service", *,
                    apply_changes: bool = False, operator: str = "", timeout_s: float | None = None,
                    incident: str = "") -> Change:
    """`kubectl rollout restart`: stamp `kubectl.kubernetes.io/restartedAt` on the pod template."""
    namespace = params.namespace("namespace", namespace)
    name = object_name(name)
    cmd = cluster.kubectl("rollout", "restart", f"deployment/{name}", "-n", namespace,
                          f"--field-manager={FIELD_MANAGER}")
    change = Change("rollout restart", f"deployment/{name} -n {namespace}", cmd, at=iso_z(),
                    who=_who(cluster, operator), incident=_incident(incident))

    def run(deadline: float) -> None:
        dep = _read_dep(cluster, deadline, namespace, name, cmd)
        _refuse_paused(dep, name, cmd)
        change.revision_before = _revision(dep)
        if change.revision_before:
            change.undo = cluster.kubectl("rollout", "undo", f"deployment/{name}", "-n", namespace,
                                          f"--to-revision={change.revision_before}", portable=True)
        change.change_cause = _cause(change, "rollout restart")
        change.kubectl = cmd + " && " + _annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause)
        stamp = change.at
        body = {"metadata": {"annotations": {CHANGE_CAUSE: change.change_cause}},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        dry = _patch(cluster, deadline, "deployment", namespace, name, body, dry_run=True, cmd=cmd)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        _patch(cluster, deadline, "deployment", namespace, name, body, dry_run=False, cmd=cmd)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            got = ((_tspec(now).get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
            return "" if got == stamp else f"read back, {RESTARTED_AT} is {got!r}, not {stamp!r}"

        _finish_deployment(cluster, change, deadline, _timeout(cluster, timeout_s), namespace, name, check)

    return _run(cluster, change, timeout_s, run)


def _refuse_paused(dep: dict[str, Any], name: str, cmd: str) -> None:
    """A paused deployment would take the change but never roll it out: say so instead."""
    if (dep.get("spec") or {}).get("paused"):
        raise KubeFailure(KubeFinding(ERROR, f"deployment/{name} is paused: `kubectl rollout resume` it first.",
                                      kubectl=cmd))


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    import copy

    t = copy.deepcopy(template)
    ((t.get("metadata") or {}).get("labels") or {}).pop("pod-template-hash", None)
    return t


def rollout_undo(cluster: Cluster, namespace: str = "default", name: str = "mistral-service",
                 to_revision: int = 0, *, apply_changes: bool = False, operator: str = "",
                 timeout_s: float | None = None, incident: str = "") -> Change:
    """`kubectl rollout undo [--to-revision=N]`: the revision's ReplicaSet template replaces the deployment's.

    `to_revision=0` means the revision before the current one. The deployment then gets a new revision
    number (the old ReplicaSet is revived), as with kubectl.
    """
    namespace = params.namespace("namespace", namespace)
    name = object_name(name)
    if isinstance(to_revision, bool) or not isinstance(to_revision, int) or to_revision < 0:
        raise params.ParameterError("to_revision", to_revision, "0 (the previous revision) or a revision number")
    cmd = cluster.kubectl("rollout", "undo", f"deployment/{name}", "-n", namespace,
                          *([f"--to-revision={to_revision}"] if to_revision else []))
    change = Change("rollout undo", f"deployment/{name} -n {namespace}", cmd, at=iso_z(), who=_who(cluster, operator),
                    incident=_incident(incident))

    def run(deadline: float) -> None:
        dep = _read_dep(cluster, deadline, namespace, name, cmd)
        _refuse_paused(dep, name, cmd)
        change.revision_before = _revision(dep)
        by_rev: dict[int, dict[str, Any]] = {}
        for rs in cluster.owned_replica_sets(deadline, namespace, dep, cmd):
            rev = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)
            if rev:
                by_rev[int(rev)] = rs
        current = int(change.revision_before or 0)
        if to_revision:
            rs = by_rev.get(to_revision)
            want = to_revision
        else:
            older = [r for r in by_rev if r < current]
            want = max(older) if older else 0
            rs = by_rev.get(want)
        if rs is None:
            raise KubeFailure(KubeFinding(NOT_FOUND, f"deployment/{name} has no revision "
                                                     f"{want or 'before ' + str(current)} to roll back to (revisions: "
                                                     f"{', '.join(map(str, sorted(by_rev))) or 'none'}).",
                                          resource="replicasets.apps", namespace=namespace, kubectl=cmd))
        target = _strip_hash(_tspec(rs))
        if change.revision_before:
            change.undo = cluster.kubectl("rollout", "undo", f"deployment/{name}", "-n", namespace,
                                          f"--to-revision={change.revision_before}", portable=True)
        if _strip_hash(_tspec(dep)) == target:
            change.dry_run_ok, change.note = True, f"skipped: the current template already matches revision {want}"
            return
        change.note = f"back to the template of revision {want} (ReplicaSet {rs['metadata'].get('name')})"
        change.change_cause = _cause(change, f"rollout undo to revision {want}")
        change.kubectl = cmd + " && " + _annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause)
        annotations = dict((dep.get("metadata") or {}).get("annotations") or {}, **{CHANGE_CAUSE: change.change_cause})
        patch = [{"op": "replace", "path": "/spec/template", "value": target},  # as kubectl rollout undo sends it
                 {"op": "add" if "annotations" not in dep["metadata"] else "replace", "path": "/metadata/annotations",
                  "value": annotations}]
        dry = _patch(cluster, deadline, "deployment", namespace, name, patch, dry_run=True, cmd=cmd,
                     content_type=_JSON_PATCH)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        _patch(cluster, deadline, "deployment", namespace, name, patch, dry_run=False, cmd=cmd,
               content_type=_JSON_PATCH)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            return "" if _strip_hash(_tspec(now)) == target else f"read back, the template is not revision {want}'s"

        _finish_deployment(cluster, change, deadline, _timeout(cluster, timeout_s), namespace, name, check)

    return _run(cluster, change, timeout_s, run)
