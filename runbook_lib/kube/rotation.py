"""Kubernetes, write side: rotating the API key in its Secret, or saying where it must be rotated.

The key is read from the environment variable *named* by `new_key_env` (never a parameter), sent as a
merge patch (`dryRun=All` unless applying) and only its fingerprint and length are recorded. The
printed command reads the key from that variable on stdin: never in a process's argv, never in an
annotation. A Secret that a controller writes from another store (External Secrets Operator, the
Secrets Store CSI driver, Sealed Secrets) is not patched: the finding says where to rotate instead.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from typing import Any

from .. import params
from .._time import iso_z
from ..secrets import fingerprint, read_secret
from . import Cluster
from ._change import (CHANGE_CAUSE, FIELD_MANAGER, MERGE, NOT_DONE, SECRETS, Change, cause_text, incident_text,
                      patch_object, run_change, who_of)
from ._client import KubeFailure, KubeFinding, object_name, send

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
                    who=who_of(cluster, operator), incident=incident_text(incident),
                    note="pods read the key when they start: rollout restart the deployment for it to take effect")
    change.kubectl = _patch_recipe(cluster, secret, namespace, key, new_key_env, cause_text(change, f"rotate {key}"))
    new_desc = f"{ref.fingerprint}, {ref.length} chars"

    def run(deadline: float) -> None:
        change.change_cause = cause_text(change, f"rotate secret key {key}")
        change.kubectl = cmd = _patch_recipe(cluster, secret, namespace, key, new_key_env, change.change_cause)
        core = cluster.apis().CoreV1Api(cluster.api_client)
        cur = cluster.request(deadline, core, "read_namespaced_secret", secret, namespace, verb="get",
                              resource=SECRETS, namespace=namespace, name=secret, kubectl=cmd)
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
        undo_cause = cause_text(change, f"undo: restore the previous secret key {key}")
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
        dry = patch_object(cluster, deadline, "secret", namespace, secret, body, dry_run=True, cmd=cmd,
                           content_type=MERGE)
        change.dry_run_ok = (dry.get("data") or {}).get(key) == body["data"][key]
        dry.clear()
        if not apply_changes:
            return
        patch_object(cluster, deadline, "secret", namespace, secret, body, dry_run=False, cmd=cmd,
                     content_type=MERGE).clear()
        change.applied = True
        back = cluster.request(deadline, core, "read_namespaced_secret", secret, namespace, verb="get",
                               resource=SECRETS, namespace=namespace, name=secret, kubectl=cmd)
        stored = (back.get("data") or {}).get(key)
        back.clear()
        change.verified = stored == body["data"][key]
        if not change.verified:
            change.finding = KubeFinding(NOT_DONE, f"The new key was sent, but secret/{secret} does not hold it when "
                                                   "read back: rotation did not take.", kubectl=cmd)

    return run_change(cluster, change, timeout_s, run)
