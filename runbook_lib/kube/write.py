"""Kubernetes, write side: the seed runbook's mitigations, dry run first, each change recorded.

- `plan_env`: set, change or remove deployment env vars (`RATE_LIMIT_MODE=queue`,
  `MAX_CONCURRENT_REQUESTS=3`, `MISTRAL_FALLBACK=true`, `MISTRAL_TIMEOUT=...`), as `kubectl set env`;
- `rotate_secret` (in `kube.rotation`, re-exported here): put a new API key into the Secret; the key
  is read from the environment variable *named* by `new_key_env` (never a parameter: papermill
  records parameters);
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

What every change shares (the `Change` record, `whoami`, the PATCH routes, `run_change`) is in
`kube._change`. Requests, deadlines and findings come from the read side's documented internal API
(`Cluster.request`, `.apis`, `.read_deployment`, `.owned_replica_sets`; `KubeFailure`,
`object_name`, `rollout_status_of`, `env_entry`), so both sides fail in the same words.
"""

from __future__ import annotations

import time
from typing import Any

from .. import params
from .._time import iso_z
from ..redact import secret_looking
from . import Cluster
from ._change import (CHANGE_CAUSE, DEPLOYMENTS, FIELD_MANAGER, JSON_PATCH, NOT_DONE, Change, annotate_cmd,
                      cause_text, incident_text, patch_object, run_change, timeout_of, who_of, whoami)
from ._client import ERROR, NOT_FOUND, KubeFailure, KubeFinding, KubeResult, object_name
from .read import env_entry, rollout_status_of
from .rotation import MANAGED_ELSEWHERE, rotate_secret

__all__ = ["CHANGE_CAUSE", "FIELD_MANAGER", "MANAGED_ELSEWHERE", "NOT_DONE", "REVISION", "RESTARTED_AT", "Change",
           "plan_env", "rollout_restart", "rollout_undo", "rotate_secret", "wait_for_rollout", "whoami"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
POLL_S = 0.25


def _read_dep(cluster: Cluster, deadline: float, namespace: str, name: str, cmd: str) -> dict[str, Any]:
    return cluster.read_deployment(deadline, namespace, name, cmd)


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


def _env_patch(cname: str, container: dict[str, Any],
               clean: dict[str, str | None]) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """(inverse, strategic-merge env items) for `clean` on `container`; `valueFrom` variables refused."""
    old = {e.get("name"): e for e in container.get("env") or []}
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
    return inverse, env_patch


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
    change = Change("set env", f"deployment/{name} -n {namespace}", "", at=iso_z(), who=who_of(cluster, operator),
                    incident=incident_text(incident))

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
                                                         f'{has}).', verb="get", resource=DEPLOYMENTS,
                                              namespace=namespace))
        else:
            target = next((c for c in containers if any(e.get("name") in clean for e in c.get("env") or [])),
                          containers[0] if containers else None)
            if target is None:
                raise KubeFailure(KubeFinding(ERROR, f"deployment/{name} has no containers.", namespace=namespace))
        cname = str(target["name"])
        change.kubectl = base(cname, clean)
        inverse, env_patch = _env_patch(cname, target, clean)
        if not env_patch:
            change.dry_run_ok, change.note = True, "nothing to change: the variables already have these values"
            change.verified = None
            return
        change.inverse = inverse
        change.undo = base(cname, inverse, portable=True)
        change.change_cause = cause_text(change, "set env " + " ".join(_env_arg(k, v) for k, v in clean.items())
                                     + f" on container {cname}")
        change.kubectl = (base(cname, clean) + " && "
                          + annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause))
        body = {"metadata": {"annotations": {CHANGE_CAUSE: change.change_cause}},
                "spec": {"template": {"spec": {"containers": [{"name": cname, "env": env_patch}]}}}}
        dry = patch_object(cluster, deadline, "deployment", namespace, name, body, dry_run=True, cmd=change.kubectl)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        patch_object(cluster, deadline, "deployment", namespace, name, body, dry_run=False, cmd=change.kubectl)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            c = next((c for c in (_tspec(now).get("spec") or {}).get("containers") or [] if c.get("name") == cname), {})
            env = {e.get("name"): e.get("value", "") for e in c.get("env") or []}
            wrong = [v for v, want in clean.items() if (env.get(v) if v in env else None) != want]
            return f"read back, {', '.join(wrong)} differ(s) from what was set" if wrong else ""

        _finish_deployment(cluster, change, deadline, timeout_of(cluster, timeout_s), namespace, name, check)

    return run_change(cluster, change, timeout_s, run)


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
                    who=who_of(cluster, operator), incident=incident_text(incident))

    def run(deadline: float) -> None:
        dep = _read_dep(cluster, deadline, namespace, name, cmd)
        _refuse_paused(dep, name, cmd)
        change.revision_before = _revision(dep)
        if change.revision_before:
            change.undo = cluster.kubectl("rollout", "undo", f"deployment/{name}", "-n", namespace,
                                          f"--to-revision={change.revision_before}", portable=True)
        change.change_cause = cause_text(change, "rollout restart")
        change.kubectl = cmd + " && " + annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause)
        stamp = change.at
        body = {"metadata": {"annotations": {CHANGE_CAUSE: change.change_cause}},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        dry = patch_object(cluster, deadline, "deployment", namespace, name, body, dry_run=True, cmd=cmd)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        patch_object(cluster, deadline, "deployment", namespace, name, body, dry_run=False, cmd=cmd)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            got = ((_tspec(now).get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
            return "" if got == stamp else f"read back, {RESTARTED_AT} is {got!r}, not {stamp!r}"

        _finish_deployment(cluster, change, deadline, timeout_of(cluster, timeout_s), namespace, name, check)

    return run_change(cluster, change, timeout_s, run)


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
    change = Change("rollout undo", f"deployment/{name} -n {namespace}", cmd, at=iso_z(), who=who_of(cluster, operator),
                    incident=incident_text(incident))

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
        change.change_cause = cause_text(change, f"rollout undo to revision {want}")
        change.kubectl = cmd + " && " + annotate_cmd(cluster, f"deployment/{name}", namespace, change.change_cause)
        annotations = dict((dep.get("metadata") or {}).get("annotations") or {}, **{CHANGE_CAUSE: change.change_cause})
        patch = [{"op": "replace", "path": "/spec/template", "value": target},  # as kubectl rollout undo sends it
                 {"op": "add" if "annotations" not in dep["metadata"] else "replace", "path": "/metadata/annotations",
                  "value": annotations}]
        dry = patch_object(cluster, deadline, "deployment", namespace, name, patch, dry_run=True, cmd=cmd,
                     content_type=JSON_PATCH)
        change.diff = _template_diff(_tspec(dep), _tspec(dry))
        change.dry_run_ok = True
        if not apply_changes:
            return
        patch_object(cluster, deadline, "deployment", namespace, name, patch, dry_run=False, cmd=cmd,
               content_type=JSON_PATCH)
        change.applied = True

        def check(now: dict[str, Any]) -> str:
            return "" if _strip_hash(_tspec(now)) == target else f"read back, the template is not revision {want}'s"

        _finish_deployment(cluster, change, deadline, timeout_of(cluster, timeout_s), namespace, name, check)

    return run_change(cluster, change, timeout_s, run)
