"""Kubernetes, write side: what every change shares (the record, who made it, how it is sent and bounded).

`kube.write` (deployments) and `kube.rotation` (the Secret) build on this: a `Change` record, the
identity the API server gives the credentials (`whoami`, a SelfSubjectReview), the
`kubernetes.io/change-cause` text, the PATCH routes (always with `fieldManager=mistral-runbooks`,
`dryRun=All` unless applying) and `run_change`, one deadline around a change's requests.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import params
from ._client import ESCALATE, FORBIDDEN, ClusterClient, KubeFailure, KubeFinding, send

Cluster = ClusterClient  # any cluster connection (kube.Cluster is one)

CHANGE_CAUSE = "kubernetes.io/change-cause"
FIELD_MANAGER = "mistral-runbooks"  # managedFields names us as the writer of what we change
NOT_DONE = "not_done"  # finding status: the change was sent but did not take (in time)

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_WRITE_ROUTES: dict[str, tuple[str, str]] = {
    "patch_namespaced_deployment": ("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"),
    "patch_namespaced_secret": ("PATCH", "/api/v1/namespaces/{namespace}/secrets/{name}"),
}
DEPLOYMENTS, SECRETS = "deployments.apps", "secrets"


class WriteApi:
    """Write routes over the official `ApiClient`, like the read routes in `kube._client` (no generated API classes)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def __getattr__(self, method: str) -> Any:
        try:
            http_method, path = _WRITE_ROUTES[method]
        except KeyError:
            raise AttributeError(method) from None

        def call(name: str, namespace: str, *, body: Any, content_type: str = SMP, dry_run: bool = True,
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


def who_of(cluster: Cluster, operator: str) -> str:
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
        user = ((json.loads(resp.data) or {}).get("status") or {}).get("userInfo") or {}
        result = (str(user.get("username") or ""), "SelfSubjectReview")
    except ApiException as exc:
        why = ("the API server has no SelfSubjectReview (before Kubernetes 1.28)" if exc.status == 404
               else f"SelfSubjectReview answered {exc.status}")
        result = ("", why)
    except Exception as exc:  # noqa: BLE001 - the identity is for the record; the change does not depend on it
        result = ("", f"SelfSubjectReview failed: {type(exc).__name__}")
    cluster._whoami = result  # type: ignore[attr-defined]
    return result


def cause_text(change: Change, what: str) -> str:
    """The kubernetes.io/change-cause text: incident, what, the operator and the authenticated identity."""
    who = change.who + (f" (as {change.identity})" if change.identity and change.identity != change.who else "")
    incident = f"incident {change.incident}" if change.incident else "no incident id"
    return f"{incident}: {what} by {who} via mistral-runbooks"


def incident_text(incident: object) -> str:
    text = params.text("incident", incident if incident is not None else "", maximum=200)
    return text.strip()


def annotate_cmd(cluster: Cluster, kind_name: str, namespace: str, cause: str, portable: bool = False) -> str:
    return cluster.kubectl("annotate", kind_name, "-n", namespace, "--overwrite", f"--field-manager={FIELD_MANAGER}",
                           f"{CHANGE_CAUSE}={cause}", portable=portable)


def timeout_of(cluster: Cluster, timeout_s: float | None) -> float:
    return params.timeout("timeout_s", cluster.timeout_s if timeout_s is None else timeout_s)


def write_finding(f: KubeFinding) -> KubeFinding:
    """A refused write must say "escalate" (kube's finding names the role that grants the verb)."""
    if f.status == FORBIDDEN:
        if ESCALATE not in f.message.lower():
            f.message += f" {ESCALATE.capitalize()}."
    return f


def run_change(cluster: Cluster, change: Change, timeout_s: float | None, fn: Any) -> Change:
    t0 = time.monotonic()
    deadline = t0 + timeout_of(cluster, timeout_s)
    try:
        if cluster.finding is not None:
            raise KubeFailure(KubeFinding(**dict(cluster.finding.to_dict(), kubectl=change.kubectl)))
        change.identity, change.identity_source = whoami(cluster, deadline)
        fn(deadline)
    except KubeFailure as fail:
        change.finding = write_finding(fail.finding)
        if not change.finding.kubectl:
            change.finding.kubectl = change.kubectl
    change.elapsed_s = time.monotonic() - t0
    return change


def patch_object(cluster: Cluster, deadline: float, kind: str, namespace: str, name: str, body: Any, *, dry_run: bool,
           cmd: str, content_type: str = SMP) -> dict[str, Any]:
    method, resource = (("patch_namespaced_deployment", DEPLOYMENTS) if kind == "deployment"
                        else ("patch_namespaced_secret", SECRETS))
    return cluster.request(deadline, WriteApi(cluster.api_client), method, name, namespace, body=body,
                           content_type=content_type, dry_run=dry_run, verb="patch", resource=resource,
                           namespace=namespace, name=name, kubectl=cmd)
