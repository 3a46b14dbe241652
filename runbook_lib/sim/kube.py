"""An embedded Kubernetes API server for the demo and the tests: kmock's emulator, extended.

No real kube-apiserver can be installed here, so the official `kubernetes` client talks real HTTP
to `kmock.KubernetesEmulator` on 127.0.0.1. As shipped, that emulator ignores `labelSelector`,
merges patches as plain JSON, answers PUT with 404, keeps Secret `stringData`, serves logs the
client rejects and fills no `uid`/`resourceVersion`/`creationTimestamp`/`generation`. The subclass
here keeps kmock's HTTP plumbing, discovery data and object store (`emulator.objects`, with every
object's history), and answers every resource request itself:

- list/get/watch with label and field selectors; lists carry `kind`, `apiVersion`, `resourceVersion`;
- create (POST), replace (PUT, with resourceVersion conflicts), patch (strategic merge by the real
  merge keys, e.g. `env` by `name`, with `$patch: delete`; JSON merge; JSON patch) and delete;
  `?dryRun=All` runs the whole write and answers, but stores nothing;
- object metadata (uid, resourceVersion, creationTimestamp, generation), Secret `stringData`;
- a deployment controller: a new pod template becomes a ReplicaSet with the next
  `deployment.kubernetes.io/revision` (an old template's ReplicaSet is revived, as rollout undo
  does), pods are replaced, status and events follow at once; a deleted pod is replaced;
- pod logs as `text/plain` with `container`, `sinceSeconds`, `sinceTime`, `tailLines`, `timestamps`,
  `previous`, `limitBytes`; a multi-container pod without `container` gets the real 400;
- HTTPS with a CA made at start (in the kubeconfig it writes), server-side Tables for `kubectl get`,
  protobuf create bodies for ConfigMap/Secret/Namespace, SelfSubjectReview: the real kubectl works;
- bearer-token authentication and a tiny RBAC: tokens for users "ok" (cluster admin), "expired"
  (401 everywhere), "forbidden" (403 on every resource, discovery allowed) and "viewer" (reads
  anything but Secrets, writes nothing), with the API server's own Status bodies and messages;
- a log of every request (method, path, query, user, status) to assert what a client did.

It is seeded with a realistic `mistral-service`: Deployment (app + proxy sidecar), two ReplicaSet
revisions, two pods (one restarted), events, the `mistral-secrets` Secret and an egress
NetworkPolicy that would block api.mistral.ai. `NOT_EMULATED` lists what it does not do.

Heavy imports (aiohttp, kmock) happen in `start()`, so importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl

from ..labels import labels_match, parse_label_selector
from ._http import wait_for_stop_signal

NOT_EMULATED = (
    "no scheduler, kubelet or containers: pods are Running and Ready as soon as they are created, "
    "and a rollout completes at once (no surge, no progress deadline)",
    "admission, defaulting and validation are minimal (containers need name and image; an env var "
    "cannot have both value and valueFrom); no OpenAPI schema checks, no immutable fields",
    "RBAC is four fixed users (ok, expired, forbidden, viewer), not Roles and Bindings",
    "server-side apply (application/apply-patch+yaml), protobuf bodies other than ConfigMap/Secret/"
    "Namespace creation, tables beyond the kinds the runbooks show (others get NAME and AGE), "
    "`limit`/`continue` paging and `resourceVersion` semantics on list/watch are not supported",
    "events.k8s.io/v1 and other resources are served from an empty store unless seeded; no "
    "garbage collection except deployment -> replicasets -> pods",
    "exec, attach, port-forward, proxy, eviction and `follow=true` logs (logs are returned at once)",
    "no Job controller: batch/v1 Jobs are stored (create, get, list, watch, delete, 409 on a taken name), "
    "but no pod runs and nothing sets their status unless a test does (`set_job_status`)",
    "TLS with a throwaway CA made at start (in the kubeconfig it writes); no client certificates, no "
    "other authentication than bearer tokens",
)

NAMESPACE = "default"
APP = "mistral-service"
SELECTOR = f"app={APP}"
SECRET_NAME = "mistral-secrets"
SECRET_KEY = "api-key"
APP_IMAGE = "registry.example.com/mistral-service"
PROXY_IMAGE = "envoyproxy/envoy:v1.31.2"
DEFAULT_CLI_PORT = 18082

# user kind -> (Kubernetes user name, what it may do)
USERS = {
    "ok": "kubernetes-admin",
    "forbidden": "system:serviceaccount:default:readonly",
    "viewer": "system:serviceaccount:default:viewer",
    "expired": "",
}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses for generated suffixes
_REVISION = "deployment.kubernetes.io/revision"
_RETURN_DELETED_OBJECT = frozenset({"pods", "services", "namespaces"})
_CHANGE_CAUSE = "kubernetes.io/change-cause"

# Custom resources the Secret-rotation checks read (served, stored, not in discovery): (group, version, plural, kind).
_EXTRA_KINDS = (
    ("external-secrets.io", "v1beta1", "externalsecrets", "ExternalSecret"),
    ("external-secrets.io", "v1", "externalsecrets", "ExternalSecret"),
    ("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasses", "SecretProviderClass"),
    ("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasspodstatuses", "SecretProviderClassPodStatus"),
)

# Strategic-merge list keys of the built-in types (field name -> merge key).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumeMounts": "mountPath", "volumes": "name", "imagePullSecrets": "name", "conditions": "type",
    "ownerReferences": "uid", "volumeDevices": "devicePath", "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name", "containerStatuses": "name",
}


# -- small helpers --------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    """metav1.Time: RFC 3339, whole seconds, `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_micro(ts: float) -> str:
    """metav1.MicroTime (`eventTime`)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_nano(ts: float) -> str:
    """The kubelet's `timestamps=true` prefix."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(round((ts % 1) * 1e9)) % 1_000_000_000:09d}Z"


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details:
        body["details"] = details
    body["code"] = code
    return body


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")


def go_bool(value: str | None) -> bool:
    """A boolean query parameter as the API server reads it (Go's strconv.ParseBool).

    The kubernetes client 36 sends Python's "True"; the real server accepts it, so the emulator does.
    An unparsable value is false here (the server would answer 400; no client we test sends one).
    """
    return value in _GO_TRUE


class ApiError(Exception):
    """An answer with a Kubernetes `Status` body, as the real API server writes it."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        return _status_body(self.code, self.reason, self.message, self.details)


def _not_found(plural: str, name: str, group: str = "") -> ApiError:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    res = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found', details)


# -- label and field selectors (server side; independent of runbook_lib.kube on purpose) -----------
def _field_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            path, value = term.split("!=", 1)
            if str(_dig(obj, path.strip()) or "") == value.strip():
                return False
        else:
            path, value = term.replace("==", "=").split("=", 1)
            if str(_dig(obj, path.strip()) or "") != value.strip():
                return False
    return True


# -- patches ----------------------------------------------------------------------------------------
def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _list_merge_key(field_name: str, items: list[Any]) -> str | None:
    if field_name == "ports":
        if any(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        return "port"
    return _MERGE_KEYS.get(field_name)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch for the built-in types.

    Maps merge recursively and `null` deletes a key; lists with a merge key (`containers` and
    `env` by `name`, `ports` by `containerPort`, ...) merge item by item, `{"<key>": ..,
    "$patch": "delete"}` removes an item, `$patch: replace` replaces a map or list whole, and
    `$deleteFromPrimitiveList/<field>` removes scalars; `$setElementOrder` and `$retainKeys` are
    accepted and ignored (new items go last). Other lists are replaced, as the real server does.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in (value or [])]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            merge_key = _list_merge_key(key, value + list(result.get(key) or []))
            if merge_key and all(isinstance(v, dict) for v in value):
                result[key] = _merge_list(result.get(key) or [], value, merge_key)
            else:
                result[key] = _strip_directives(value)
        else:
            result[key] = value
    return result


def _merge_list(target: list[Any], patch: list[dict[str, Any]], key: str) -> list[Any]:
    if any(item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(i) for i in patch if i.get("$patch") != "replace"]
    out = copy.deepcopy(target)
    for item in patch:
        if key not in item:
            out.append(_strip_directives(item))
            continue
        idx = next((i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_strip_directives(item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


# -- the cluster state and the API semantics (plain Python, no HTTP) -------------------------------
@dataclass
class _Watch:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any]
    res: tuple[str, str, str]
    namespace: str | None
    labels: list[tuple[str, str, tuple[str, ...]]]
    fields: str


@dataclass
class _ResInfo:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


_PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>.+))?/?$"
)


class _Cluster:
    """Objects, logs, events and the handful of controllers; every method takes the lock."""

    def __init__(self, objects: Any, resources: Any, resource_cls: Any) -> None:
        self.lock = threading.RLock()
        self.objects = objects  # kmock ObjectsArray: (resource, namespace, name) -> history
        self._resource_cls = resource_cls
        self._info: dict[tuple[str, str, str], _ResInfo] = {}
        for res in resources:
            info = resources[res]
            if res.plural and res.version is not None and res.group is not None:
                kind = info.kind or res.plural.capitalize()
                self._info[(res.group, res.version, res.plural)] = _ResInfo(
                    res.group, res.version, res.plural, kind, bool(info.namespaced))
        for group, version, plural, kind in _EXTRA_KINDS:  # custom resources a cluster often has; none seeded
            self._info.setdefault((group, version, plural), _ResInfo(group, version, plural, kind, True))
        self._rv = 1000
        self._rng = random.Random(20240611)
        self._clock_override: float | None = None
        self._ip_counter = 10
        self.logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.previous_logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.log_source: Callable[[], list[str]] | None = None
        self.log_selector: str = SELECTOR
        self.watches: list[_Watch] = []
        self.current_manager: str | None = None  # the fieldManager of the write being served

    # ---- time, ids -------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock_override if self._clock_override is not None else time.time()

    def _uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _suffix(self, n: int = 5) -> str:
        return "".join(self._rng.choice(_NAME_CHARS) for _ in range(n))

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # ---- store -----------------------------------------------------------------------------
    def info(self, group: str, version: str, plural: str) -> _ResInfo:
        info = self._info.get((group, version, plural))
        if info is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"group": group, "kind": plural} if group else {"kind": plural})
        return info

    def info_for(self, dotted: str) -> _ResInfo:
        """'v1/pods', 'apps/v1/deployments' -> resource info."""
        parts = dotted.split("/")
        if len(parts) == 2:
            return self.info("", parts[0], parts[1])
        return self.info(parts[0], parts[1], parts[2])

    def _res(self, info: _ResInfo) -> Any:
        return self._resource_cls(info.group, info.version, info.plural)

    def get(self, info: _ResInfo, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (self._res(info), namespace if info.namespaced else None, name)
        with self.lock:
            if key not in self.objects:
                return None
            obj = self.objects[key]
            return None if obj.deleted else copy.deepcopy(obj.raw)

    def items(self, info: _ResInfo, namespace: str | None = None) -> list[dict[str, Any]]:
        res = self._res(info)
        out = []
        with self.lock:
            for (r, ns, name), obj in sorted(self.objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])):
                if r == res and not obj.deleted and (namespace is None or not info.namespaced or ns == namespace):
                    out.append(copy.deepcopy(obj.raw))
        return out

    def _store(self, info: _ResInfo, obj: dict[str, Any], event: str) -> None:
        meta = obj["metadata"]
        key = (self._res(info), meta.get("namespace") if info.namespaced else None, meta["name"])
        if key in self.objects:
            if self.objects[key].deleted:
                self.objects[key].create(obj)
            else:
                self.objects[key].history.append(obj)
        else:
            self.objects[key] = obj
        self._publish(info, event, obj)

    def _remove(self, info: _ResInfo, namespace: str | None, name: str) -> None:
        key = (self._res(info), namespace if info.namespaced else None, name)
        if key in self.objects and not self.objects[key].deleted:
            last = copy.deepcopy(self.objects[key].raw)
            self.objects[key].delete()
            last["metadata"]["resourceVersion"] = self._next_rv()
            self._publish(info, "DELETED", last)
            if info.plural == "pods":
                for store in (self.logs, self.previous_logs):
                    for k in [k for k in store if k[0] == namespace and k[1] == name]:
                        del store[k]

    def _publish(self, info: _ResInfo, event: str, obj: dict[str, Any]) -> None:
        for w in list(self.watches):
            meta = obj.get("metadata", {})
            if w.res != info.key or (w.namespace and meta.get("namespace") != w.namespace):
                continue
            if not labels_match(meta.get("labels"), w.labels) or (w.fields and not _field_match(obj, w.fields)):
                continue
            payload = {"type": event, "object": copy.deepcopy(obj)}
            try:
                w.loop.call_soon_threadsafe(w.queue.put_nowait, payload)
            except RuntimeError:  # loop closed
                pass

    # ---- object lifecycle ------------------------------------------------------------------
    def _finish_new(self, info: _ResInfo, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or NAMESPACE
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + self._suffix()
            else:
                raise ApiError(422, "Invalid", f'{info.kind} "" is invalid: metadata.name: Required value: '
                                               "name or generateName is required",
                               {"kind": info.plural, "causes": [{"reason": "FieldValueRequired",
                                                                 "message": "Required value: name or generateName is required",
                                                                 "field": "metadata.name"}]})
        meta["uid"] = self._uid()
        meta["creationTimestamp"] = _iso(self.now())
        meta["resourceVersion"] = self._next_rv()
        if "spec" in obj:
            meta["generation"] = 1
        self._normalise(info, obj)
        return obj

    def _normalise(self, info: _ResInfo, obj: dict[str, Any]) -> None:
        """What the apiserver does on every write: Secret stringData -> data, minimal validation."""
        if info.plural == "secrets":
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {}) or {}
                for k, v in string_data.items():
                    data[k] = _b64(str(v))
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        template_spec = None
        if info.plural in ("deployments", "replicasets", "statefulsets", "daemonsets", "jobs"):
            template_spec = _dig(obj, "spec.template.spec")
        elif info.plural == "pods":
            template_spec = obj.get("spec")
        if isinstance(template_spec, dict):
            prefix = "spec.template.spec" if info.plural != "pods" else "spec"
            causes = []
            for i, c in enumerate(template_spec.get("containers") or []):
                for fld in ("name", "image"):
                    if not c.get(fld):
                        causes.append((f"{prefix}.containers[{i}].{fld}", "Required value"))
                for j, env in enumerate(c.get("env") or []):
                    if not env.get("name"):
                        causes.append((f"{prefix}.containers[{i}].env[{j}].name", "Required value"))
                    if env.get("value") and env.get("valueFrom"):
                        causes.append((f"{prefix}.containers[{i}].env[{j}].valueFrom",
                                       'Invalid value: "": may not be specified when `value` is not empty'))
            if not template_spec.get("containers"):
                causes.append((f"{prefix}.containers", "Required value"))
            if info.plural == "jobs" and template_spec.get("restartPolicy") not in ("Never", "OnFailure"):
                # the Job registry's own check (a Job's pods must not restart forever)
                causes.append((f"{prefix}.restartPolicy", f'Unsupported value: "{template_spec.get("restartPolicy") or ""}"'
                                                          ': supported values: "OnFailure", "Never"'))
            if causes:
                name = _dig(obj, "metadata.name") or ""
                group = f".{info.group}" if info.group else ""
                text = ", ".join(f"{f}: {m}" for f, m in causes)
                message = f'{info.kind}{group} "{name}" is invalid: {"[" + text + "]" if len(causes) > 1 else text}'
                raise ApiError(422, "Invalid", message, {
                    "name": name, **({"group": info.group} if info.group else {}), "kind": info.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})

    def create(self, info: _ResInfo, namespace: str | None, body: Any, dry_run: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        body_ns = _dig(obj, "metadata.namespace")
        if info.namespaced and namespace and body_ns and body_ns != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                              "namespace sent on the request")
        with self.lock:
            obj = self._finish_new(info, obj, namespace)
            name = obj["metadata"]["name"]
            if self.get(info, obj["metadata"].get("namespace"), name) is not None:
                res = f"{info.plural}.{info.group}" if info.group else info.plural
                raise ApiError(409, "AlreadyExists", f'{res} "{name}" already exists',
                               {"name": name, **({"group": info.group} if info.group else {}), "kind": info.plural})
            if dry_run:
                obj["metadata"].pop("resourceVersion", None)
                self._rv -= 1
                return obj
            if info.plural == "pods":
                self._pod_defaults(obj)
            self._stamp_manager(info, obj["metadata"], [], "Update")
            self._store(info, obj, "ADDED")
            self._after_write(info, obj, None)
            return self.get(info, obj["metadata"].get("namespace"), name) or obj

    def _stamp_manager(self, info: _ResInfo, meta: dict[str, Any], previous: list[Any], operation: str) -> None:
        """metadata.managedFields: who wrote the object (the request's fieldManager), as the API server keeps it;
        kept as they were when a write leaves them out. Field sets are not tracked (fieldsV1 is empty)."""
        fields = [dict(f) for f in (meta["managedFields"] if "managedFields" in meta else previous) or []]
        manager, self.current_manager = self.current_manager, None
        if manager:
            fields = [f for f in fields if (f.get("manager"), f.get("operation")) != (manager, operation)]
            fields.append({"manager": manager, "operation": operation, "apiVersion": info.api_version,
                           "time": _iso(self.now()), "fieldsType": "FieldsV1", "fieldsV1": {}})
        if fields:
            meta["managedFields"] = fields

    def _existing(self, info: _ResInfo, namespace: str | None, name: str) -> dict[str, Any]:
        cur = self.get(info, namespace, name)
        if cur is None:
            raise _not_found(info.plural, name, info.group)
        return cur

    def _write_existing(self, info: _ResInfo, cur: dict[str, Any], new: dict[str, Any], dry_run: bool,
                        controllers: bool = True) -> dict[str, Any]:
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        meta_cur, meta = cur["metadata"], new.setdefault("metadata", {})
        if meta.get("name", meta_cur["name"]) != meta_cur["name"]:
            raise ApiError(400, "BadRequest", f'the name of the object ({meta.get("name")}) does not match '
                                              f'the name on the URL ({meta_cur["name"]})')
        for k in ("name", "namespace", "uid", "creationTimestamp"):
            if k in meta_cur:
                meta[k] = meta_cur[k]
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        self._normalise(info, new)
        if "generation" in meta_cur or "spec" in new:
            gen = int(meta_cur.get("generation") or 0) or 1
            meta["generation"] = gen + 1 if new.get("spec") != cur.get("spec") else gen
        if new == cur:  # a no-op write keeps the resourceVersion, as the real server does
            return new
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        self._stamp_manager(info, meta, meta_cur.get("managedFields") or [], "Update")
        self._store(info, new, "MODIFIED")
        if controllers:  # a status write is what a controller reports: no reconcile on top
            self._after_write(info, new, cur)
        return self.get(info, meta.get("namespace"), meta["name"]) or new

    def replace(self, info: _ResInfo, namespace: str | None, name: str, body: Any, dry_run: bool,
                subresource: str | None = None) -> dict[str, Any]:
        with self.lock:
            cur = self._existing(info, namespace, name)
            new = copy.deepcopy(body) if isinstance(body, dict) else body
            rv = _dig(new, "metadata.resourceVersion") if isinstance(new, dict) else None
            if rv and rv != cur["metadata"].get("resourceVersion"):
                group = f".{info.group}" if info.group else ""
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {info.plural}{group} "{name}": '
                                                "the object has been modified; please apply your changes to the "
                                                "latest version and try again",
                               {"name": name, **({"group": info.group} if info.group else {}), "kind": info.plural})
            if isinstance(new, dict) and "status" in cur and (subresource != "status" or "status" not in new):
                new["status"] = cur["status"]  # the main resource ignores status changes
            return self._write_existing(info, cur, new, dry_run, controllers=subresource != "status")

    def patch(self, info: _ResInfo, namespace: str | None, name: str, body: bytes, content_type: str,
              dry_run: bool, subresource: str | None = None) -> dict[str, Any]:
        ctype = content_type.split(";")[0].strip().lower()
        try:
            patch = json.loads(body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format") from None
        with self.lock:
            cur = self._existing(info, namespace, name)
            if ctype == "application/strategic-merge-patch+json":
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
                new = strategic_merge_patch(cur, patch)
            elif ctype == "application/merge-patch+json":
                new = json_merge_patch(cur, patch)
            elif ctype == "application/json-patch+json":
                import jsonpatch

                try:
                    new = jsonpatch.apply_patch(cur, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                                   f"request: {exc}") from None
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                            f"accepted media types include: application/json-patch+json, "
                                                            f"application/merge-patch+json, "
                                                            f"application/strategic-merge-patch+json")
            if subresource == "status":
                keep = copy.deepcopy(cur)
                keep["status"] = new.get("status")
                new = keep
            elif "status" in cur:
                new["status"] = cur["status"]  # the main resource ignores status changes
            return self._write_existing(info, cur, new, dry_run, controllers=subresource != "status")

    def delete(self, info: _ResInfo, namespace: str | None, name: str, dry_run: bool) -> dict[str, Any]:
        """Deleted at once (no grace period). Pods, services and namespaces answer with the object,
        as their real registries do; everything else with a Success Status."""
        with self.lock:
            cur = self._existing(info, namespace, name)
            if info.plural in _RETURN_DELETED_OBJECT:
                result = copy.deepcopy(cur)
                result["metadata"]["deletionTimestamp"] = _iso(self.now())
                result["metadata"]["deletionGracePeriodSeconds"] = 0
            else:
                result = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, **({"group": info.group} if info.group else {}),
                                      "kind": info.plural, "uid": cur["metadata"].get("uid")}}
            if dry_run:
                return result
            self._remove(info, namespace, name)
            self._after_delete(info, cur)
            return result

    # ---- controllers -----------------------------------------------------------------------
    def _after_write(self, info: _ResInfo, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        if info.plural == "deployments":
            self.reconcile_deployment(new["metadata"]["namespace"], new["metadata"]["name"])

    def _after_delete(self, info: _ResInfo, old: dict[str, Any]) -> None:
        ns, uid = old["metadata"].get("namespace"), old["metadata"].get("uid")
        if info.plural == "deployments":
            rs_info = self.info("apps", "v1", "replicasets")
            for rs in self.items(rs_info, ns):
                if self._owned_by(rs, uid):
                    self._remove(rs_info, ns, rs["metadata"]["name"])
                    self._after_delete(rs_info, rs)
        elif info.plural == "replicasets":
            pod_info = self.info("", "v1", "pods")
            for pod in self.items(pod_info, ns):
                if self._owned_by(pod, uid):
                    self._remove(pod_info, ns, pod["metadata"]["name"])
        elif info.plural == "pods":
            owner = next((o for o in old["metadata"].get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"), None)
            if owner:
                self._event(ns, {"kind": "Pod", "name": old["metadata"]["name"], "uid": uid, "apiVersion": "v1",
                                 "namespace": ns}, "Normal", "Killing",
                            f"Stopping container {(old['spec'].get('containers') or [{}])[0].get('name', 'app')}",
                            "kubelet")
                self._scale_replicaset(ns, owner["name"])

    @staticmethod
    def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
        return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])

    @staticmethod
    def _template_hash(template: dict[str, Any]) -> str:
        t = copy.deepcopy(template)
        (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
        digest = hashlib.sha256(json.dumps(t, sort_keys=True).encode()).digest()
        return "".join(_NAME_CHARS[b % len(_NAME_CHARS)] for b in digest[:10])

    @staticmethod
    def _same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
        a, b = copy.deepcopy(a), copy.deepcopy(b)
        for t in (a, b):
            t.setdefault("metadata", {}).setdefault("labels", {}).pop("pod-template-hash", None)
        return a == b

    def reconcile_deployment(self, namespace: str, name: str) -> None:
        """The deployment controller, instantly: revision bookkeeping, ReplicaSets, pods, status."""
        dep_info, rs_info = self.info("apps", "v1", "deployments"), self.info("apps", "v1", "replicasets")
        with self.lock:
            dep = self.get(dep_info, namespace, name)
            if dep is None or (dep.get("spec") or {}).get("paused"):
                return
            spec, uid = dep["spec"], dep["metadata"]["uid"]
            replicas = int(spec.get("replicas", 1))
            owned = [rs for rs in self.items(rs_info, namespace) if self._owned_by(rs, uid)]
            revisions = [int((rs["metadata"].get("annotations") or {}).get(_REVISION, "0")) for rs in owned]
            max_rev = max(revisions, default=0)
            current = next((rs for rs in owned if self._same_template(rs["spec"]["template"], spec["template"])), None)
            now = self.now()
            dep_ref = {"kind": "Deployment", "namespace": namespace, "name": name, "uid": uid, "apiVersion": "apps/v1"}
            if current is None:
                h = self._template_hash(spec["template"])
                template = copy.deepcopy(spec["template"])
                template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                selector = copy.deepcopy(spec.get("selector") or {"matchLabels": {}})
                selector.setdefault("matchLabels", {})["pod-template-hash"] = h
                annotations = {_REVISION: str(max_rev + 1), "deployment.kubernetes.io/desired-replicas": str(replicas),
                               "deployment.kubernetes.io/max-replicas": str(replicas + max(1, replicas // 4))}
                cause = (dep["metadata"].get("annotations") or {}).get(_CHANGE_CAUSE)
                if cause:
                    annotations[_CHANGE_CAUSE] = cause
                rs = {"metadata": {"name": f"{name}-{h}", "namespace": namespace,
                                   "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
                                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                        "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
                      "spec": {"replicas": 0, "selector": selector, "template": template},
                      "status": {"replicas": 0, "observedGeneration": 1}}
                rs = self._finish_new(rs_info, rs, namespace)
                self._store(rs_info, rs, "ADDED")
                current = rs
            else:
                rev = int((current["metadata"].get("annotations") or {}).get(_REVISION, "0"))
                if rev < max_rev:  # an old template came back (rollout undo): it takes the next revision
                    ann = current["metadata"].setdefault("annotations", {})
                    history = [h for h in ann.get("deployment.kubernetes.io/revision-history", "").split(",") if h]
                    ann["deployment.kubernetes.io/revision-history"] = ",".join(history + [str(rev)])
                    ann[_REVISION] = str(max_rev + 1)
                    cause = (dep["metadata"].get("annotations") or {}).get(_CHANGE_CAUSE)
                    if cause:
                        ann[_CHANGE_CAUSE] = cause
                    current["metadata"]["resourceVersion"] = self._next_rv()
                    self._store(rs_info, current, "MODIFIED")
                else:  # the controller keeps the new ReplicaSet's change-cause in step (kubectl annotate later)
                    cause = (dep["metadata"].get("annotations") or {}).get(_CHANGE_CAUSE)
                    ann = current["metadata"].setdefault("annotations", {})
                    if cause and ann.get(_CHANGE_CAUSE) != cause:
                        ann[_CHANGE_CAUSE] = cause
                        current["metadata"]["resourceVersion"] = self._next_rv()
                        self._store(rs_info, current, "MODIFIED")
            cur_name = current["metadata"]["name"]
            cur_replicas = int(current["spec"].get("replicas", 0))
            if cur_replicas != replicas:
                self._set_rs_replicas(self.get(rs_info, namespace, cur_name) or current, replicas)
                verb = "up" if replicas > cur_replicas else "down"
                self._event(namespace, dep_ref, "Normal", "ScalingReplicaSet",
                            f"Scaled {verb} replica set {cur_name} from {cur_replicas} to {replicas}",
                            "deployment-controller")
            for rs in owned:
                if rs["metadata"]["name"] != cur_name and int(rs["spec"].get("replicas", 0)) > 0:
                    self._set_rs_replicas(rs, 0)
                    self._event(namespace, dep_ref, "Normal", "ScalingReplicaSet",
                                f"Scaled down replica set {rs['metadata']['name']} from "
                                f"{rs['spec'].get('replicas', 0)} to 0", "deployment-controller")
            self._prune_history(dep, rs_info)
            # status, as the controller reports it once the rollout is complete
            dep = self.get(dep_info, namespace, name) or dep
            rs_now = self.get(rs_info, namespace, cur_name) or current
            ann = dep["metadata"].setdefault("annotations", {})
            ann[_REVISION] = rs_now["metadata"]["annotations"][_REVISION]
            gen = dep["metadata"].get("generation", 1)
            prior = dep.get("status") or {}
            conditions = {c["type"]: c for c in prior.get("conditions") or []}
            stamp = _iso(now)
            conditions["Available"] = {"type": "Available", "status": "True", "lastUpdateTime": stamp,
                                       "lastTransitionTime": conditions.get("Available", {}).get("lastTransitionTime", stamp),
                                       "reason": "MinimumReplicasAvailable",
                                       "message": "Deployment has minimum availability."}
            conditions["Progressing"] = {"type": "Progressing", "status": "True", "lastUpdateTime": stamp,
                                         "lastTransitionTime": conditions.get("Progressing", {}).get("lastTransitionTime", stamp),
                                         "reason": "NewReplicaSetAvailable",
                                         "message": f'ReplicaSet "{cur_name}" has successfully progressed.'}
            dep["status"] = {"observedGeneration": gen, "replicas": replicas, "updatedReplicas": replicas,
                             "readyReplicas": replicas, "availableReplicas": replicas,
                             "conditions": [conditions["Available"], conditions["Progressing"]]}
            if replicas == 0:
                for k in ("readyReplicas", "availableReplicas", "updatedReplicas"):
                    dep["status"].pop(k)
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._store(dep_info, dep, "MODIFIED")

    def _prune_history(self, dep: dict[str, Any], rs_info: _ResInfo) -> None:
        limit = int(dep["spec"].get("revisionHistoryLimit", 10))
        ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
        old = [rs for rs in self.items(rs_info, ns)
               if self._owned_by(rs, uid) and int(rs["spec"].get("replicas", 0)) == 0]
        old.sort(key=lambda rs: int(rs["metadata"]["annotations"].get(_REVISION, "0")))
        current_rev = max((int(rs["metadata"]["annotations"].get(_REVISION, "0"))
                           for rs in self.items(rs_info, ns) if self._owned_by(rs, uid)), default=0)
        old = [rs for rs in old if int(rs["metadata"]["annotations"].get(_REVISION, "0")) != current_rev]
        for rs in old[: max(0, len(old) - limit)]:
            self._remove(rs_info, ns, rs["metadata"]["name"])

    def _set_rs_replicas(self, rs: dict[str, Any], replicas: int) -> None:
        rs_info = self.info("apps", "v1", "replicasets")
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = replicas
        ann = rs["metadata"].setdefault("annotations", {})
        ann["deployment.kubernetes.io/desired-replicas"] = str(replicas) if replicas else ann.get(
            "deployment.kubernetes.io/desired-replicas", "0")
        rs["metadata"]["generation"] = int(rs["metadata"].get("generation", 1)) + 1
        rs["metadata"]["resourceVersion"] = self._next_rv()
        self._store(rs_info, rs, "MODIFIED")
        self._scale_replicaset(rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _scale_replicaset(self, namespace: str, name: str) -> None:
        """The ReplicaSet controller: create or delete pods until they match `spec.replicas`."""
        rs_info, pod_info = self.info("apps", "v1", "replicasets"), self.info("", "v1", "pods")
        rs = self.get(rs_info, namespace, name)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.items(pod_info, namespace) if self._owned_by(p, uid)]
        want = int(rs["spec"].get("replicas", 0))
        rs_ref = {"kind": "ReplicaSet", "namespace": namespace, "name": name, "uid": uid, "apiVersion": "apps/v1"}
        for pod in pods[want:]:
            self._remove(pod_info, namespace, pod["metadata"]["name"])
            self._event(namespace, rs_ref, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                        "replicaset-controller")
        for _ in range(max(0, want - len(pods))):
            pod = self.new_pod(rs)
            self._event(namespace, rs_ref, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                        "replicaset-controller")
        count = want
        rs = self.get(rs_info, namespace, name) or rs
        rs["status"] = {"replicas": count, "fullyLabeledReplicas": count, "readyReplicas": count,
                        "availableReplicas": count, "observedGeneration": rs["metadata"].get("generation", 1)}
        if not count:
            rs["status"] = {"replicas": 0, "observedGeneration": rs["metadata"].get("generation", 1)}
        rs["metadata"]["resourceVersion"] = self._next_rv()
        self._store(rs_info, rs, "MODIFIED")

    def new_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        pod_info = self.info("", "v1", "pods")
        template = copy.deepcopy(rs["spec"]["template"])
        ns = rs["metadata"]["namespace"]
        pod = {"metadata": {"name": f"{rs['metadata']['name']}-{self._suffix()}", "namespace": ns,
                            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                            "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                 "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"],
                                                 "controller": True, "blockOwnerDeletion": True}]},
               "spec": template.get("spec") or {}}
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        pod = self._finish_new(pod_info, pod, ns)
        self._pod_defaults(pod)
        self._store(pod_info, pod, "ADDED")
        name = pod["metadata"]["name"]
        ref = {"kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"], "apiVersion": "v1"}
        self._event(ns, ref, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to node-1",
                    "default-scheduler", modern=True)
        for c in pod["spec"]["containers"]:
            self._event(ns, ref, "Normal", "Pulled", f'Container image "{c["image"]}" already present on machine',
                        "kubelet", field_path=f"spec.containers{{{c['name']}}}")
            self._event(ns, ref, "Normal", "Started", f"Started container {c['name']}", "kubelet",
                        field_path=f"spec.containers{{{c['name']}}}")
            self.logs[(ns, name, c["name"])] = _startup_lines(c["name"], c.get("image", ""), self.now())
        return pod

    def _pod_defaults(self, pod: dict[str, Any]) -> None:
        """What scheduler and kubelet would fill in: a node, an IP, Running and Ready."""
        spec = pod.setdefault("spec", {})
        spec.setdefault("nodeName", "node-1")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        started = pod["metadata"].get("creationTimestamp") or _iso(self.now())
        self._ip_counter += 1
        statuses = []
        for c in spec.get("containers") or []:
            statuses.append({"name": c["name"], "image": c.get("image", ""), "imageID": f"{c.get('image', '')}@sha256:"
                             + hashlib.sha256(c.get("image", "").encode()).hexdigest(),
                             "containerID": "containerd://" + hashlib.sha256(
                                 (pod["metadata"]["name"] + c["name"]).encode()).hexdigest(),
                             "ready": True, "started": True, "restartCount": 0,
                             "state": {"running": {"startedAt": started}}, "lastState": {}})
        cond = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        pod["status"] = {"phase": "Running", "conditions": cond, "hostIP": "192.168.49.2",
                         "hostIPs": [{"ip": "192.168.49.2"}], "podIP": f"10.244.0.{self._ip_counter}",
                         "podIPs": [{"ip": f"10.244.0.{self._ip_counter}"}], "startTime": started,
                         "containerStatuses": statuses, "qosClass": "Burstable"}

    def _event(self, namespace: str, involved: dict[str, Any], type_: str, reason: str, message: str,
               component: str, *, field_path: str | None = None, count: int = 1, first: float | None = None,
               last: float | None = None, modern: bool = False) -> None:
        """A core/v1 Event. `modern=True`: written through events.k8s.io (eventTime, no lastTimestamp)."""
        info = self.info("", "v1", "events")
        involved = dict(involved)
        if field_path:
            involved["fieldPath"] = field_path
        last = self.now() if last is None else last
        first = last if first is None else first
        ev: dict[str, Any] = {"metadata": {"name": f"{involved['name']}.{self._rng.getrandbits(64):016x}",
                                           "namespace": namespace},
                              "involvedObject": involved, "reason": reason, "message": message, "type": type_,
                              "count": count, "reportingComponent": component, "reportingInstance": "",
                              "source": {"component": component} | ({"host": "node-1"} if component == "kubelet" else {})}
        if modern:
            ev.update({"firstTimestamp": None, "lastTimestamp": None, "eventTime": _iso_micro(last),
                       "action": "Binding", "reportingInstance": f"{component}-node-1"})
            ev.pop("count")
        else:
            ev.update({"firstTimestamp": _iso(first), "lastTimestamp": _iso(last), "eventTime": None})
        ev = self._finish_new(info, ev, namespace)
        ev["metadata"]["creationTimestamp"] = _iso(first)
        self._store(info, ev, "ADDED")

    # ---- logs ------------------------------------------------------------------------------
    def _source_lines_for(self, namespace: str, pod_name: str) -> list[tuple[float, str]] | None:
        """With a log source: its lines, split across the selected pods (line i -> pod i mod n)."""
        if self.log_source is None:
            return None
        reqs = parse_label_selector(self.log_selector)
        pods = sorted(p["metadata"]["name"] for p in self.items(self.info("", "v1", "pods"), namespace)
                      if labels_match(p["metadata"].get("labels"), reqs))
        if pod_name not in pods:
            return None
        try:
            lines = list(self.log_source())
        except Exception as exc:  # noqa: BLE001 - a broken source must not break the API server
            return [(self.now(), f"log source failed: {type(exc).__name__}")]
        idx, n = pods.index(pod_name), len(pods)
        out = []
        for i, line in enumerate(lines):
            if i % n != idx:
                continue
            line = line.rstrip("\n")
            ts = None
            if line.startswith("{"):
                try:
                    ts = _parse_time(json.loads(line).get("ts"))
                except (ValueError, AttributeError):
                    ts = None
            out.append((ts if ts is not None else self.now(), line))
        return out

    def container_lines(self, namespace: str, pod: dict[str, Any], container: str, previous: bool) -> list[tuple[float, str]]:
        name = pod["metadata"]["name"]
        if previous:
            lines = self.previous_logs.get((namespace, name, container))
            if lines is None:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found')
            return list(lines)
        base = list(self.logs.get((namespace, name, container), []))
        if container == "app":
            source = self._source_lines_for(namespace, name)
            if source is not None:
                return sorted(base + source, key=lambda t: t[0])
        return base

    def read_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        with self.lock:
            pod = self.get(self.info("", "v1", "pods"), namespace, name)
            if pod is None:
                raise _not_found("pods", name)
            containers = [c["name"] for c in pod["spec"].get("containers") or []]
            container = query.get("container")
            if not container:
                if len(containers) != 1:
                    raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, "
                                                      f"choose one of: [{' '.join(containers)}]")
                container = containers[0]
            if container not in containers:
                raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
            lines = self.container_lines(namespace, pod, container, go_bool(query.get("previous")))
        try:
            since_s = int(query["sinceSeconds"]) if "sinceSeconds" in query else None
            tail = int(query["tailLines"]) if "tailLines" in query else None
            limit_bytes = int(query["limitBytes"]) if "limitBytes" in query else None
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid log options: sinceSeconds, tailLines and limitBytes must be "
                                              "integers") from None
        if since_s is not None and since_s < 1:
            raise ApiError(422, "Invalid", f'PodLogOptions "{name}" is invalid: sinceSeconds: Invalid value: '
                                           f"{since_s}: must be greater than 0")
        if "sinceTime" in query:
            since_t = _parse_time(query["sinceTime"])
            if since_t is None:
                raise ApiError(400, "BadRequest", f"invalid sinceTime {query['sinceTime']!r}")
            lines = [t for t in lines if t[0] >= since_t]
        if since_s is not None:
            cutoff = self.now() - since_s
            lines = [t for t in lines if t[0] >= cutoff]
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail else []
        stamp = go_bool(query.get("timestamps"))
        text = "".join((f"{_iso_nano(ts)} " if stamp else "") + line + "\n" for ts, line in lines)
        if limit_bytes is not None and limit_bytes > 0:
            text = text.encode("utf-8")[:limit_bytes].decode("utf-8", "ignore")
        return text


def _startup_lines(container: str, image: str, ts: float) -> list[tuple[float, str]]:
    if container == "proxy":
        return [(ts, f"[{_iso(ts)}][1][info][main] initializing epoch 0 (base id=0, hot restart version=11.104)"),
                (ts + 0.2, f"[{_iso(ts + 0.2)}][1][info][main] starting main dispatch loop")]
    version = image.rsplit(":", 1)[-1] if ":" in image else "latest"
    return [(ts, "INFO:     Started server process [1]"),
            (ts + 0.1, json.dumps({"ts": _iso(ts + 0.1), "level": "info", "msg": f"mistral-service {version} starting",
                                   "model": None, "code": None})),
            (ts + 0.3, "INFO:     Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)")]


# -- the seeded world ---------------------------------------------------------------------------------
def _app_container(image: str, timeout_ms: str, sentry_token: str) -> dict[str, Any]:
    return {
        "name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "MISTRAL_API_KEY", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}},
            {"name": "MISTRAL_MODEL", "value": "mistral-small-latest"},
            {"name": "MISTRAL_TIMEOUT", "value": timeout_ms},
            {"name": "MAX_CONCURRENT_REQUESTS", "value": "20"},
            {"name": "LOG_FORMAT", "value": "json"},
            {"name": "SENTRY_TOKEN", "value": sentry_token},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10,
                           "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }


def _proxy_container() -> dict[str, Any]:
    return {
        "name": "proxy", "image": PROXY_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info"],
        "ports": [{"name": "admin", "containerPort": 9901, "protocol": "TCP"}],
        "env": [{"name": "ENVOY_UID", "value": "101"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }


def _template(image: str, timeout_ms: str, sentry_token: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": APP}},
            "spec": {"containers": [_app_container(image, timeout_ms, sentry_token), _proxy_container()],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                     "serviceAccountName": "default"}}


# Deterministic error schedule of the seeded app logs: request i of a pod -> (code, level, msg).
def _seeded_call(i: int) -> tuple[str, str, str]:
    if i % 12 == 3:
        return "429", "error", "mistral request failed: 429 rate_limited"
    if i % 20 == 7:
        return "401", "error", "mistral request failed: 401 Unauthorized"
    if i % 15 == 11:
        return "000", "error", "mistral request failed: 000 ReadTimeout"
    if i == 41:
        return "503", "error", "mistral request failed: 503 server_error"
    if i == 52:
        return "429", "error", "mistral request failed: 429 invalid_request_error"
    if i == 33:
        return "000", "error", "mistral request failed: 000 ConnectError: [Errno 111] Connection refused"
    return "200", "info", "mistral request ok: 200"


def seeded_app_lines(pod_index: int, now: float) -> list[tuple[float, str]]:
    """The app container's log of a seeded pod: 60 JSON request lines over the last 10 minutes
    (every 10 s), some errors, and plain-text lines as uvicorn writes them."""
    models = ("mistral-small-latest", "mistral-large-latest", "codestral-latest")
    start = now - 600 + pod_index * 3
    out: list[tuple[float, str]] = [(start - 5, "INFO:     Started server process [1]"),
                                    (start - 4, "INFO:     Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)")]
    for i in range(60):
        ts = start + i * 10
        code, level, msg = _seeded_call(i)
        latency = 30000.0 if msg.endswith("ReadTimeout") else 180.0 + (i * 37 % 400)
        out.append((ts, json.dumps({"ts": _iso(ts) .replace("Z", ".000Z"), "level": level, "msg": msg,
                                    "model": models[i % 3], "code": code, "latency_ms": latency,
                                    "correlation_id": f"{pod_index:02d}{i:02d}" + "0" * 28})))
        if i == 45:
            out.append((ts + 1, "ERROR:    Exception in ASGI application"))
        if i == 50 and pod_index == 0:
            out.append((ts + 1, "WARNING:  mistral client: ConnectError while calling api.mistral.ai, retrying"))
    return out


def seeded_proxy_lines(now: float) -> list[tuple[float, str]]:
    out = _startup_lines("proxy", PROXY_IMAGE, now - 620)
    for i in range(20):
        ts = now - 600 + i * 30
        code = "429" if i % 6 == 2 else "200"
        out.append((ts, f'[{_iso(ts)}] "POST /v1/chat/completions HTTP/1.1" {code} - 812 1433 742 741 "-" '
                        f'"python-httpx/0.28.1" "{i:08x}-0000" "api.mistral.ai:443"'))
        if i in (13, 17):
            out.append((ts + 2, f"[{_iso(ts + 2)}][21][warning][client] upstream connect error or disconnect/reset "
                                "before headers. reset reason: connection timeout"))
    return sorted(out)


def _seed(cluster: _Cluster, namespace: str, api_key: str, sentry_token: str) -> None:
    c = cluster
    now = time.time()
    dep_info = c.info("apps", "v1", "deployments")
    ns_info = c.info("", "v1", "namespaces")
    for ns in sorted({namespace, "kube-system"}):
        obj = c._finish_new(ns_info, {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                                      "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}, None)
        obj["metadata"].pop("generation", None)
        c._store(ns_info, obj, "ADDED")

    sec_info = c.info("", "v1", "secrets")
    c._clock_override = now - 3 * 86400
    secret = c._finish_new(sec_info, {"metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": {"app": APP}},
                                      "type": "Opaque", "stringData": {SECRET_KEY: api_key}}, namespace)
    c._store(sec_info, secret, "ADDED")

    np_info = c.info("networking.k8s.io", "v1", "networkpolicies")
    for pol in (
        {"metadata": {"name": f"{APP}-egress", "namespace": namespace, "labels": {"app": APP}},
         "spec": {"podSelector": {"matchLabels": {"app": APP}}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                             {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                              "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}},
        {"metadata": {"name": "default-deny-ingress", "namespace": namespace},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    ):
        c._store(np_info, c._finish_new(np_info, pol, namespace), "ADDED")

    # Revision 1, three days ago; revision 2 (new image, longer timeout) two hours ago.
    dep = {"metadata": {"name": APP, "namespace": namespace, "labels": {"app": APP},
                        "annotations": {}},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": APP}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                    "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                    "template": _template(f"{APP_IMAGE}:1.4.1", "10000", sentry_token)}}
    dep = c._finish_new(dep_info, dep, namespace)
    c._store(dep_info, dep, "ADDED")
    c.reconcile_deployment(namespace, APP)
    c._clock_override = now - 2 * 3600
    dep = c.get(dep_info, namespace, APP)
    assert dep is not None
    dep["spec"]["template"] = _template(f"{APP_IMAGE}:1.4.2", "30000", sentry_token)
    dep["metadata"]["annotations"][_CHANGE_CAUSE] = (
        f"kubectl set image deployment/{APP} app={APP_IMAGE}:1.4.2")
    # what `kubectl apply` leaves behind: the whole manifest, literal env values included
    dep["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": namespace},
         "spec": {"replicas": 2, "template": dep["spec"]["template"]}}, separators=(",", ":"))
    dep["metadata"]["generation"] = 2
    dep["metadata"]["resourceVersion"] = c._next_rv()
    c._store(dep_info, dep, "MODIFIED")
    c.reconcile_deployment(namespace, APP)
    c._clock_override = None

    # Pod 1 restarted three times (last 12 minutes ago): BackOff and Unhealthy warnings.
    pod_info = c.info("", "v1", "pods")
    pods = [p for p in c.items(pod_info, namespace) if (p["metadata"].get("labels") or {}).get("app") == APP]
    for idx, pod in enumerate(pods):
        name = pod["metadata"]["name"]
        if c.log_source is None:
            c.logs[(namespace, name, "app")] = seeded_app_lines(idx, now)
        c.logs[(namespace, name, "proxy")] = seeded_proxy_lines(now)
    restarted = pods[1]
    name = restarted["metadata"]["name"]
    crash_at = now - 12 * 60
    app_status = restarted["status"]["containerStatuses"][0]
    app_status["restartCount"] = 3
    app_status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": _iso(crash_at - 240),
                                              "finishedAt": _iso(crash_at),
                                              "containerID": "containerd://" + "e" * 64}}
    app_status["state"] = {"running": {"startedAt": _iso(crash_at + 20)}}
    restarted["metadata"]["resourceVersion"] = c._next_rv()
    c._store(pod_info, restarted, "MODIFIED")
    c.previous_logs[(namespace, name, "app")] = [
        (crash_at - 240, "INFO:     Started server process [1]"),
        (crash_at - 2, json.dumps({"ts": _iso(crash_at - 2), "level": "error",
                                   "msg": "mistral request failed: 000 ConnectError: [Errno 111] Connection refused",
                                   "model": "mistral-small-latest", "code": "000", "latency_ms": 3.1})),
        (crash_at - 1, json.dumps({"ts": _iso(crash_at - 1), "level": "critical",
                                   "msg": "worker exited: too many consecutive upstream failures"})),
    ]
    ref = {"kind": "Pod", "namespace": namespace, "name": name, "uid": restarted["metadata"]["uid"], "apiVersion": "v1"}
    c._event(namespace, ref, "Warning", "BackOff", f"Back-off restarting failed container app in pod "
                                                   f"{name}_{namespace}({restarted['metadata']['uid']})",
             "kubelet", field_path="spec.containers{app}", count=7, first=now - 40 * 60, last=now - 11 * 60)
    c._event(namespace, ref, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503",
             "kubelet", field_path="spec.containers{app}", count=4, first=now - 14 * 60, last=now - 4 * 60)
    c._event(namespace, ref, "Normal", "Pulled", f'Container image "{APP_IMAGE}:1.4.2" already present on machine',
             "kubelet", field_path="spec.containers{app}", count=4, first=now - 2 * 3600, last=now - 12 * 60 + 15)
    c._event(namespace, ref, "Normal", "Created", "Created container app", "kubelet",
             field_path="spec.containers{app}", count=4, first=now - 2 * 3600, last=now - 12 * 60 + 19)
    c._event(namespace, ref, "Normal", "Started", "Started container app", "kubelet",
             field_path="spec.containers{app}", count=4, first=now - 2 * 3600, last=now - 12 * 60 + 20)
    svc = {"kind": "Service", "namespace": namespace, "name": APP, "uid": c._uid(), "apiVersion": "v1"}
    c._event(namespace, svc, "Normal", "TopologyAwareHintsDisabled",
             "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes, "
             "addressType: IPv4", "endpoint-slice-controller", last=now - 25 * 60, modern=True)
    # The API server keeps events for an hour (--event-ttl=1h): older ones are gone.
    ev_info = c.info("", "v1", "events")
    for ev in c.items(ev_info, namespace):
        seen = _parse_time(ev.get("lastTimestamp")) or _parse_time(ev.get("eventTime")) or 0.0
        if seen < now - 3600:
            c._remove(ev_info, namespace, ev["metadata"]["name"])


# -- protobuf request bodies (kubectl's typed clients send `application/vnd.kubernetes.protobuf`) -----
_PROTOBUF = "application/vnd.kubernetes.protobuf"


def _pb_fields(buf: bytes) -> list[tuple[int, Any]]:
    """Protocol-buffer wire format: (field number, int or bytes) pairs, in order."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    while i < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out.append((num, varint()))
        elif wire == 2:
            n = varint()
            out.append((num, buf[i:i + n]))
            i += n
        elif wire == 1:
            out.append((num, buf[i:i + 8]))
            i += 8
        elif wire == 5:
            out.append((num, buf[i:i + 4]))
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _pb_map(entries: list[bytes], binary: bool = False) -> dict[str, str]:
    out = {}
    for entry in entries:
        kv = dict(_pb_fields(entry))
        value = kv.get(2, b"")
        out[kv.get(1, b"").decode("utf-8")] = base64.b64encode(value).decode("ascii") if binary else value.decode("utf-8")
    return out


def _pb_meta(buf: bytes) -> dict[str, Any]:
    f = _pb_fields(buf)
    meta: dict[str, Any] = {}
    for num, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
        val = next((v for n, v in f if n == num), None)
        if val:
            meta[key] = val.decode("utf-8")
    for num, key in ((11, "labels"), (12, "annotations")):
        entries = [v for n, v in f if n == num]
        if entries:
            meta[key] = _pb_map(entries)
    return meta


def protobuf_object(body: bytes) -> dict[str, Any]:
    """The few kinds kubectl creates from its typed clients (ConfigMap, Secret, Namespace,
    SelfSubjectReview), decoded from the `k8s\\x00` + runtime.Unknown envelope into JSON form.
    Anything else: 415, as a server that cannot read the body answers."""
    if not body.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
    env = dict(_pb_fields(body[4:]))
    type_meta = dict(_pb_fields(env.get(1, b"")))
    api_version, kind = type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode()
    f = _pb_fields(env.get(2, b""))
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind,
                           "metadata": _pb_meta(next((v for n, v in f if n == 1), b""))}
    if kind == "ConfigMap":
        obj["data"] = _pb_map([v for n, v in f if n == 2])
        if any(n == 3 for n, _ in f):
            obj["binaryData"] = _pb_map([v for n, v in f if n == 3], binary=True)
    elif kind == "Secret":
        obj["data"] = _pb_map([v for n, v in f if n == 2], binary=True)
        kind_type = next((v for n, v in f if n == 3), None)
        if kind_type:
            obj["type"] = kind_type.decode()
        if any(n == 4 for n, _ in f):
            obj["stringData"] = _pb_map([v for n, v in f if n == 4])
    elif kind not in ("Namespace", "SelfSubjectReview"):
        raise ApiError(415, "UnsupportedMediaType", f"the emulator cannot read a protobuf {kind or 'object'}: send "
                                                    "application/json")
    return obj


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_len(num: int, payload: bytes) -> bytes:
    return _pb_varint(num << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_str(num: int, text: str) -> bytes:
    return _pb_len(num, text.encode("utf-8"))


_OPENAPI_V2_PROTOBUF = "application/octet-stream"  # as kube-openapi serves it (the Accept has an "@" Go rejects)


def openapi_v2_protobuf(infos: Iterable[_ResInfo]) -> bytes:
    """A minimal OpenAPI v2 document (gnostic openapi_v2.Document, protobuf) with, for every resource,
    a PATCH operation tagged with its group/version/kind and a `dryRun` query parameter: what kubectl
    before 1.24 reads to decide that `--dry-run=server` is supported (its DryRunVerifier). No schemas
    (client-side validation then has nothing to check, as for an unknown type)."""
    paths = b""
    for info in sorted(infos, key=lambda i: (i.group, i.version, i.plural)):
        base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
        path = f"{base}/namespaces/{{namespace}}/{info.plural}/{{name}}" if info.namespaced else \
            f"{base}/{info.plural}/{{name}}"
        gvk = json.dumps({"group": info.group, "kind": info.kind, "version": info.version})
        query = _pb_str(2, "query") + _pb_str(4, "dryRun") + _pb_str(6, "string")  # QueryParameterSubSchema
        parameter = _pb_len(8, _pb_len(1, _pb_len(2, _pb_len(3, query))))  # ParametersItem.Parameter.NonBody.Query
        extension = _pb_len(13, _pb_str(1, "x-kubernetes-group-version-kind") + _pb_len(2, _pb_str(2, gvk)))
        operation = _pb_str(5, f"patch{info.kind}") + parameter + extension
        paths += _pb_len(2, _pb_str(1, path) + _pb_len(2, _pb_len(8, operation)))  # NamedPathItem{PathItem.patch}
    info_msg = _pb_str(1, "Kubernetes") + _pb_str(2, "v1.26.4")
    return _pb_str(1, "2.0") + _pb_len(2, info_msg) + _pb_len(8, paths)


# -- server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) ------------------
# kubectl asks the server for a Table on every plain `kubectl get` (and -o wide); a server that
# answers with a list instead gets only NAME and AGE printed. Columns as the real API server's
# printers (pkg/printers/internalversion) define them, for the kinds the runbooks show.
def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration: `45s`, `3m20s`, `120m`, `5h10m`, `2d3h`, ..."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(ts: Any, now: float) -> str:
    t = _parse_time(ts)
    return "<unknown>" if t is None else human_duration(now - t)


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def _pod_cells(pod: dict[str, Any], now: float) -> list[Any]:
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    reason = st.get("reason") or st.get("phase") or "Unknown"
    restarts, last_restart, ready, running = 0, None, 0, False
    for c in reversed(statuses):
        restarts += int(c.get("restartCount") or 0)
        finished = _parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"] or {}
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}")
        elif c.get("ready") and "running" in state:
            ready += 1
            running = True
    if reason == "Completed" and running:
        reason = "Running"
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    shown_restarts = str(restarts) + (f" ({human_duration(now - last_restart)} ago)" if last_restart else "")
    return [meta.get("name"), f"{ready}/{len(spec.get('containers') or [])}", reason, shown_restarts,
            _age(meta.get("creationTimestamp"), now), st.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            st.get("nominatedNodeName") or "<none>", "<none>"]


def _event_cells(ev: dict[str, Any], now: float) -> list[Any]:
    inv = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or (ev.get("series") or {}).get("lastObservedTime")
    first = ev.get("firstTimestamp") or ev.get("eventTime")
    source = ev.get("reportingComponent") or (ev.get("source") or {}).get("component") or ""
    host = (ev.get("source") or {}).get("host")
    return [_age(last, now), ev.get("type"), ev.get("reason"), f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
            inv.get("fieldPath") or "", f"{source}, {host}" if host else source, ev.get("message"),
            _age(first, now), int(ev.get("count") or (ev.get("series") or {}).get("count") or 1),
            (ev.get("metadata") or {}).get("name")]


def _workload_cells(obj: dict[str, Any], now: float, deployment: bool) -> list[Any]:
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    containers = _dig(obj, "spec.template.spec.containers") or []
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    tail = [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>"]
    if deployment:
        return [meta.get("name"), f"{int(st.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
                int(st.get("updatedReplicas") or 0), int(st.get("availableReplicas") or 0),
                _age(meta.get("creationTimestamp"), now), *tail]
    return [meta.get("name"), int(spec.get("replicas") or 0), int(st.get("replicas") or 0),
            int(st.get("readyReplicas") or 0), _age(meta.get("creationTimestamp"), now), *tail]


_TABLE_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "pods": [_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts"), _col("Age"),
             _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
             _col("Readiness Gates", priority=1)],
    "events": [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
               _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
               _col("Count", "integer", 1), _col("Name", priority=1)],
    "deployments": [_col("Name", fmt="name"), _col("Ready"), _col("Up-to-date", "integer"),
                    _col("Available", "integer"), _col("Age"), _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)],
    "replicasets": [_col("Name", fmt="name"), _col("Desired", "integer"), _col("Current", "integer"),
                    _col("Ready", "integer"), _col("Age"), _col("Containers", priority=1), _col("Images", priority=1),
                    _col("Selector", priority=1)],
    "secrets": [_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
    "networkpolicies": [_col("Name", fmt="name"), _col("Pod-Selector"), _col("Age")],
}


def _table_cells(plural: str, obj: dict[str, Any], now: float) -> list[Any]:
    meta = obj.get("metadata") or {}
    if plural == "pods":
        return _pod_cells(obj, now)
    if plural == "events":
        return _event_cells(obj, now)
    if plural in ("deployments", "replicasets"):
        return _workload_cells(obj, now, plural == "deployments")
    if plural == "secrets":
        return [meta.get("name"), obj.get("type") or "Opaque", len(obj.get("data") or {}),
                _age(meta.get("creationTimestamp"), now)]
    if plural == "networkpolicies":
        sel = _dig(obj, "spec.podSelector.matchLabels") or {}
        return [meta.get("name"), ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
                _age(meta.get("creationTimestamp"), now)]
    return [meta.get("name"), _age(meta.get("creationTimestamp"), now)]


def as_table(info: _ResInfo, items: list[dict[str, Any]], include: str, now: float,
             resource_version: str = "") -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `items`; each row's object as `include` asks (None, Metadata, Object)."""
    columns = _TABLE_COLUMNS.get(info.plural) or [_col("Name", fmt="name"), _col("Age")]
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": _table_cells(info.plural, obj, now)}
        full = dict(obj, kind=info.kind, apiVersion=info.api_version)
        if include == "Object":
            row["object"] = full
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata") or {}}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


def wants_table(accept: str) -> bool:
    """Whether an Accept header asks for a meta.k8s.io Table (as kubectl's `get` does)."""
    return any("as=Table" in part.replace(" ", "") and "g=meta.k8s.io" in part for part in accept.split(","))


# -- the server --------------------------------------------------------------------------------------
def file_log_source(path: str | Path, max_lines: int = 5000) -> Callable[[], list[str]]:
    """A `log_source` reading the last `max_lines` lines of a JSON-lines file (absent file: none)."""
    p = Path(path)

    def read() -> list[str]:
        try:
            with p.open("rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - max_lines * 400))
                data = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        lines = data.splitlines()
        if size > max_lines * 400 and lines:
            lines = lines[1:]  # the first one is probably cut
        return lines[-max_lines:]

    return read


@dataclass
class _Started:
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread
    port: int
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class KubeEmulator:
    """The embedded Kubernetes API on 127.0.0.1, in a background thread with its own event loop.

    `with KubeEmulator() as kube:` then `kube.write_kubeconfig(path)` and use the official client.
    `requests` lists every request received; `writes()` the POST/PUT/PATCH/DELETE ones.
    """

    deployment = APP
    selector = SELECTOR
    secret_name = SECRET_NAME
    secret_key = SECRET_KEY

    def __init__(self, host: str = "127.0.0.1", port: int = 0, namespace: str = NAMESPACE,
                 log_source: Callable[[], list[str]] | None = None, api_key: str | None = None,
                 tls: bool = True, self_subject_review: bool = True) -> None:
        self.host = host
        self.tls = tls  # HTTPS with a CA made at start: kubectl sends no bearer token over plain HTTP
        self._tls_material: Any = None
        self.self_subject_review = self_subject_review  # False: a server before Kubernetes 1.28 (404)
        self._want_port = port
        self.namespace = namespace
        self.log_source = log_source
        self.api_key = api_key if api_key else "sim-" + secrets.token_urlsafe(24)
        self.sentry_token = "sntrys_" + secrets.token_urlsafe(30)
        self._tokens = {kind: f"kmock-{kind}-{secrets.token_hex(12)}" for kind in USERS}
        self._requests: list[dict[str, Any]] = []
        self._req_lock = threading.Lock()
        self._mode = "ok"
        self._started: _Started | None = None
        self._cluster: _Cluster | None = None
        self._handler: Any = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        if self._started is not None:
            return self
        import aiohttp.web  # noqa: F401 - fail here, in the caller's thread, if missing
        import kmock

        handler = _make_handler_class()(self)
        with warnings.catch_warnings():  # kmock reads its bundle with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            handler.resources.load_bundled()
        cluster = _Cluster(handler.objects, handler.resources, kmock.resource)
        cluster.log_source = self.log_source
        _seed(cluster, self.namespace, self.api_key, self.sentry_token)
        self._cluster, self._handler = cluster, handler

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._want_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        port = sock.getsockname()[1]
        ssl_context = None
        if self.tls:
            from ._tls import make_server_tls

            self._tls_material = make_server_tls([self.host], common_name="kube-emulator")
            ssl_context = self._tls_material.ssl_context()
        loop = asyncio.new_event_loop()
        started = _Started(loop=loop, stop=asyncio.Event(), thread=threading.Thread(), port=port)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(handler, sock, started, ssl_context))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                started.error = exc
                started.ready.set()
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()
                    sock.close()

        started.thread = threading.Thread(target=run, name=f"kube-emulator-{port}", daemon=True)
        self._started = started
        started.thread.start()
        if not started.ready.wait(10) or started.error is not None:
            self.stop()
            raise RuntimeError(f"Kubernetes emulator failed to start: {started.error!r}")
        return self

    async def _serve(self, handler: Any, sock: socket.socket, started: _Started, ssl_context: Any = None) -> None:
        import aiohttp.web

        started.stop = asyncio.Event()
        async with handler:
            server = aiohttp.web.Server(handler, access_log=None)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.25)
            await runner.setup()
            site = aiohttp.web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            started.ready.set()
            try:
                await started.stop.wait()
            finally:
                for w in list(self._cluster.watches if self._cluster else []):
                    w.queue.put_nowait(None)
                await asyncio.wait_for(runner.cleanup(), 3)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving (hung and watch requests are cut), bounded by `timeout_s`."""
        started, self._started = self._started, None
        if started is None:
            return
        self._mode = "ok"
        try:
            started.loop.call_soon_threadsafe(started.stop.set)
        except RuntimeError:
            pass  # loop already closed
        started.thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._started is None:
            raise RuntimeError("the emulator is not running")
        return self._started.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def ca_pem(self) -> str:
        """The PEM of the CA that signed this run's server certificate ("" without TLS)."""
        if self._started is None and self._tls_material is None:
            raise RuntimeError("the emulator is not running")
        return self._tls_material.ca_pem if self._tls_material is not None else ""

    def write_ca(self, path: str | Path) -> Path:
        """The CA certificate as a PEM file (for `curl --cacert`, `SSL_CERT_FILE`, ...)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.ca_pem, encoding="ascii")
        return p

    # ---- faults ----------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """"ok"; "hang": every request waits until the mode changes or the emulator stops;
        "error": every request gets 500 InternalError (an API server with a broken etcd)."""
        if mode not in ("ok", "hang", "error"):
            raise ValueError(f"unknown mode {mode!r}: expected ok, hang or error")
        self._mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    # ---- Jobs: no kubelet runs them; a test's stand-in runner reports what happened ----------
    def set_job_status(self, name: str, namespace: str, outcome: str, reason: str = "", message: str = "") -> dict[str, Any]:
        """Write a batch/v1 Job's status as the Job controller would: `outcome` "active" (started),
        "succeeded" (Complete) or "failed" (Failed, with `reason`, e.g. DeadlineExceeded). Watchers see it."""
        info = self.cluster.info("batch", "v1", "jobs")
        cur = self.cluster._existing(info, namespace, name)
        now = _iso(self.cluster.now())
        status = dict(cur.get("status") or {})
        status.setdefault("startTime", now)
        if outcome == "active":
            status["active"] = 1
        elif outcome in ("succeeded", "failed"):
            done = outcome == "succeeded"
            status.pop("active", None)
            status["succeeded" if done else "failed"] = 1
            cond = {"type": "Complete" if done else "Failed", "status": "True", "lastProbeTime": now,
                    "lastTransitionTime": now, "reason": reason or ("Completed" if done else "BackoffLimitExceeded"),
                    "message": message or ("Reached expected number of succeedings" if done else
                                           "Job has reached the specified backoff limit")}
            status["conditions"] = [*(status.get("conditions") or []), cond]
            if done:
                status["completionTime"] = now
        else:
            raise ValueError(f"outcome {outcome!r}: expected active, succeeded or failed")
        return self.cluster.replace(info, namespace, name, dict(cur, status=status), False, "status")

    # ---- auth ------------------------------------------------------------------------------
    def token(self, user: str = "ok") -> str:
        if user not in self._tokens:
            raise ValueError(f"unknown user {user!r}: expected one of {sorted(self._tokens)}")
        return self._tokens[user]

    def write_kubeconfig(self, path: str | Path, *, user: str = "ok", context_name: str = "embedded",
                         namespace: str | None = None) -> Path:
        """A kubeconfig (YAML is a JSON superset: written as JSON) with a bearer token for `user`.

        Over TLS the cluster entry carries this run's CA as `certificate-authority-data`, so the
        official client and the real kubectl verify the server and send the token.
        """
        token = self.token(user)
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode("ascii")).decode("ascii")
        cfg = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context_name,
               "clusters": [{"name": context_name, "cluster": cluster}],
               "users": [{"name": f"{context_name}-{user}", "user": {"token": token}}],
               "contexts": [{"name": context_name, "context": {"cluster": context_name, "user": f"{context_name}-{user}",
                                                               "namespace": namespace or self.namespace}}]}
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        p.chmod(0o600)
        return p

    def _user_of(self, authorization: str) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "anonymous"
        for kind, t in self._tokens.items():
            if secrets.compare_digest(t.encode(), token.strip().encode()):
                return kind
        return "invalid"

    # ---- request log -----------------------------------------------------------------------
    def _record(self, entry: dict[str, Any]) -> None:
        with self._req_lock:
            self._requests.append(entry)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request so far: ts, method, path, query, user (token kind), username, status, dry_run;
        writes also their body and content_type."""
        with self._req_lock:
            return [dict(r, query=dict(r["query"])) for r in self._requests]

    def writes(self) -> list[dict[str, Any]]:
        """The requests with a mutating method (POST, PUT, PATCH, DELETE), dry runs included
        (a SelfSubjectReview is a POST that stores nothing: not counted)."""
        return [r for r in self.requests if r["method"] in _WRITE_METHODS
                and not r["path"].endswith("/selfsubjectreviews")]  # a question, not a write

    def clear_requests(self) -> None:
        with self._req_lock:
            self._requests.clear()

    # ---- state, for tests and the demo -----------------------------------------------------
    @property
    def cluster(self) -> _Cluster:
        if self._cluster is None:
            raise RuntimeError("the emulator is not started")
        return self._cluster

    @property
    def objects(self) -> Any:
        """kmock's object store: `objects[resource, namespace, name]` with `.history`."""
        return self.cluster.objects

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The stored object, e.g. `get("apps/v1/deployments", "mistral-service")`."""
        return self.cluster.get(self.cluster.info_for(resource), namespace or self.namespace, name)

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.cluster.items(self.cluster.info_for(resource), namespace or self.namespace)

    def pod_names(self, namespace: str | None = None) -> list[str]:
        ns = namespace or self.namespace
        reqs = parse_label_selector(SELECTOR)
        return [p["metadata"]["name"] for p in self.list("v1/pods", ns)
                if labels_match(p["metadata"].get("labels"), reqs)]

    def container_env(self, deployment: str = "mistral-service", container: str = "app",
                      namespace: str | None = None) -> dict[str, str | None]:
        """A deployment container's env as stored (name -> literal value, None for references): for tests."""
        dep = self.get("apps/v1/deployments", deployment, namespace or self.namespace)
        spec = dep["spec"]["template"]["spec"]
        app = next(c for c in spec["containers"] if c["name"] == container)
        return {e["name"]: e.get("value") for e in app.get("env", [])}

    def container_log(self, pod: str, container: str, *, previous: bool = False,
                      namespace: str | None = None) -> list[tuple[float, str]]:
        """(timestamp, line) pairs a container's log holds right now, as the API would serve them."""
        c, ns = self.cluster, namespace or self.namespace
        with c.lock:
            obj = c.get(c.info("", "v1", "pods"), ns, pod)
            if obj is None:
                raise KeyError(pod)
            return c.container_lines(ns, obj, container, previous)

    @property
    def literal_secret_values(self) -> dict[str, str]:
        """Literal env values in the Deployment that are secrets (must never be shown by a reader)."""
        return {"SENTRY_TOKEN": self.sentry_token}

    # ---- request handling (called in the server's event loop) ------------------------------
    async def _handle(self, request: Any) -> Any:
        import aiohttp.web

        raw = request._raw_request
        method = str(raw.method).upper()
        query = dict(parse_qsl(raw.query_string, keep_blank_values=True))
        user = self._user_of(raw.headers.get("Authorization", ""))
        dry_run = "dryRun" in query
        entry = {"ts": time.time(), "method": method, "path": raw.path, "query": query, "user": user,
                 "username": USERS.get(user, ""), "status": None, "dry_run": dry_run}
        self._record(entry)
        while self._mode == "hang" and self._started is not None:
            await asyncio.sleep(0.05)

        def reply(status: int, payload: Any, content_type: str = "application/json") -> Any:
            entry["status"] = status
            if isinstance(payload, (dict, list)):
                body = json.dumps(payload).encode()
            else:
                body = payload.encode() if isinstance(payload, str) else payload
            return aiohttp.web.Response(status=status, body=body, content_type=content_type,
                                        charset="utf-8" if content_type.startswith(("text/", "application/json")) else None)

        if self._mode == "error":
            return reply(500, _status_body(500, "InternalError", "Internal error occurred: etcdserver: request timed out",
                                           {"causes": [{"message": "etcdserver: request timed out"}]}))
        if user not in ("ok", "forbidden", "viewer"):
            return reply(401, _status_body(401, "Unauthorized", "Unauthorized"))
        path = raw.path
        m = _PATH.match(path)
        if m is None:  # discovery, from kmock's bundled resource list
            h, p = self._handler, path.rstrip("/") or "/"
            try:
                if p == "/version":
                    return reply(200, await h._serve_server_version(request))
                if p == "/openapi/v2" and self._cluster is not None:
                    return reply(200, openapi_v2_protobuf(self._cluster._info.values()), _OPENAPI_V2_PROTOBUF)
                if p == "/api":
                    return reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
                if p == "/api/v1":
                    payload = await h._serve_version(request)
                    payload["groupVersion"] = "v1"  # kmock says "/v1"
                    for r in payload.get("resources") or []:
                        if "/" in str(r.get("name", "")):  # sub-resources have no short names
                            r.pop("shortNames", None)
                    return reply(200, payload)
                if p == "/apis":
                    return reply(200, await h._serve_apis(request))
                if re.fullmatch(r"/apis/[^/]+", p):
                    return reply(200, await h._serve_group(request))
                if re.fullmatch(r"/apis/[^/]+/[^/]+", p):
                    payload = await h._serve_version(request)
                    for r in payload.get("resources") or []:
                        if "/" in str(r.get("name", "")):  # sub-resources have no short names
                            r.pop("shortNames", None)
                    return reply(200, payload)
                if p == "/":
                    return reply(200, await h._serve_root(request))
            except Exception:  # noqa: BLE001 - kmock's "resource not found" and friends
                pass
            return reply(404, _status_body(404, "NotFound", "the server could not find the requested resource"))
        group = m.group("g") or ""
        version = m.group("cv") or m.group("v")
        plural, name, sub, ns = m.group("plural"), m.group("name"), m.group("sub"), m.group("ns")
        if method in _WRITE_METHODS:
            entry["body"] = request.body  # what the client sent (tests compare it with what a runbook sends)
            entry["content_type"] = raw.headers.get("Content-Type", "")
        try:
            status, payload, ctype = await self._resource(method, user, group, version, plural, ns, name, sub,
                                                          query, raw, request.body, dry_run)
        except ApiError as err:
            return reply(err.code, err.body())
        finally:
            if self._cluster is not None:
                self._cluster.current_manager = None
        if ctype == "stream":
            entry["status"] = 200
            return payload
        return reply(status, payload, ctype)

    async def _resource(self, method: str, user: str, group: str, version: str, plural: str, ns: str | None,
                        name: str | None, sub: str | None, query: dict[str, str], raw: Any, body: bytes,
                        dry_run: bool) -> tuple[int, Any, str]:
        c = self.cluster
        info = c.info(group, version, plural)
        watch = method == "GET" and go_bool(query.get("watch"))
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
        if (group, plural) == ("authentication.k8s.io", "selfsubjectreviews") and method == "POST" and not name:
            if not self.self_subject_review:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 201, self._self_subject_review(user, info), "application/json"
        self._authorize(user, verb, info, ns, name, sub)
        if dry_run and query.get("dryRun") != "All":
            raise ApiError(400, "BadRequest", f"Invalid dry run value: {query.get('dryRun')!r}: only 'All' is supported")
        if info.namespaced is False:
            ns = None
        if sub == "log":
            if method != "GET" or plural != "pods" or not name:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return 200, c.read_log(ns or self.namespace, name, query), "text/plain"
        if sub not in (None, "status", "scale"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if watch:
            return 200, await self._watch(info, ns, query, raw), "stream"
        table = method == "GET" and sub is None and wants_table(raw.headers.get("Accept", ""))
        if method == "GET" and name:
            obj = c.get(info, ns, name)
            if obj is None:
                raise _not_found(plural, name, group)
            if table:
                return 200, as_table(info, [obj], query.get("includeObject", "Metadata"), c.now(),
                                     obj["metadata"].get("resourceVersion", "")), "application/json"
            return 200, self._scale_of(obj) if sub == "scale" else obj, "application/json"
        if method == "GET":
            listed = self._list(info, ns, query)
            if table:
                return 200, as_table(info, listed["items"], query.get("includeObject", "Metadata"), c.now(),
                                     listed["metadata"]["resourceVersion"]), "application/json"
            return 200, listed, "application/json"
        if not dry_run:  # the real server names a write without fieldManager after the client's user agent
            agent = raw.headers.get("User-Agent", "").split("/", 1)[0]
            c.current_manager = query.get("fieldManager") or agent or "unknown"
        data = None
        if method in ("POST", "PUT"):
            if raw.headers.get("Content-Type", "").split(";")[0].strip() == _PROTOBUF:
                try:
                    data = protobuf_object(body)
                except (ValueError, IndexError, UnicodeDecodeError):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format") from None
            else:
                try:
                    data = json.loads(body.decode("utf-8") or "null")
                except (ValueError, UnicodeDecodeError):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format") from None
        if method == "POST" and not name:
            return 201, c.create(info, ns, data, dry_run), "application/json"
        if method == "PUT" and name:
            if sub == "scale":
                return 200, self._scale_of(self._set_scale(info, ns, name, data, dry_run)), "application/json"
            if sub == "status" and isinstance(data, dict):
                cur = c._existing(info, ns, name)
                data = dict(cur, status=data.get("status"))
            return 200, c.replace(info, ns, name, data, dry_run, sub), "application/json"
        if method == "PATCH" and name:
            ctype = raw.headers.get("Content-Type", "")
            if sub == "scale":
                patch = json.loads(body.decode("utf-8") or "{}")
                replicas = _dig(patch, "spec.replicas")
                return 200, self._scale_of(self._set_scale(info, ns, name, {"spec": {"replicas": replicas}}, dry_run)), \
                    "application/json"
            return 200, c.patch(info, ns, name, body, ctype, dry_run, sub), "application/json"
        if method == "DELETE" and name:
            return 200, c.delete(info, ns, name, dry_run), "application/json"
        if method == "DELETE":
            items = self._list(info, ns, query)["items"]
            for item in items:
                c.delete(info, ns, item["metadata"]["name"], dry_run)
            return 200, {"kind": info.kind + "List", "apiVersion": info.api_version, "metadata": {}, "items": items}, \
                "application/json"
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _self_subject_review(self, user: str, info: _ResInfo) -> dict[str, Any]:
        """authentication.k8s.io/v1 SelfSubjectReview: who these credentials are (`kubectl auth whoami`)."""
        name = USERS[user]
        groups = (["kubeadm:cluster-admins", "system:authenticated"] if not name.startswith("system:serviceaccount:")
                  else ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
        uid = str(uuid.UUID(hashlib.sha256(name.encode()).hexdigest()[:32]))
        return {"kind": "SelfSubjectReview", "apiVersion": info.api_version, "metadata": {"creationTimestamp": None},
                "status": {"userInfo": {"username": name, "uid": uid, "groups": groups}}}

    def _authorize(self, user: str, verb: str, info: _ResInfo, ns: str | None, name: str | None, sub: str | None) -> None:
        allowed = user == "ok" or (user == "viewer" and verb in ("get", "list", "watch") and info.plural != "secrets")
        if allowed:
            return
        resource = f"{info.plural}/{sub}" if sub else info.plural
        qualified = f"{info.plural}.{info.group}" if info.group else info.plural
        who = f'{qualified} "{name}"' if name else qualified
        scope = f' in the namespace "{ns}"' if ns and info.namespaced else " at the cluster scope"
        message = (f'{who} is forbidden: User "{USERS[user]}" cannot {verb} resource "{resource}" '
                   f'in API group "{info.group}"{scope}')
        details: dict[str, Any] = {}
        if name:
            details["name"] = name
        if info.group:
            details["group"] = info.group
        details["kind"] = info.plural
        raise ApiError(403, "Forbidden", message, details)

    def _list(self, info: _ResInfo, ns: str | None, query: dict[str, str]) -> dict[str, Any]:
        c = self.cluster
        try:
            reqs = parse_label_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        fields = query.get("fieldSelector", "")
        with c.lock:
            items = [o for o in c.items(info, ns)
                     if labels_match(o["metadata"].get("labels"), reqs) and (not fields or _field_match(o, fields))]
            rv = str(c._rv)
        for o in items:  # the real server leaves kind/apiVersion off list items
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return {"kind": f"{info.kind}List", "apiVersion": info.api_version, "metadata": {"resourceVersion": rv},
                "items": items}

    def _scale_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        sel = (_dig(obj, "spec.selector.matchLabels") or {})
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": _dig(obj, "spec.replicas") or 0},
                "status": {"replicas": _dig(obj, "status.replicas") or 0,
                           "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}

    def _set_scale(self, info: _ResInfo, ns: str | None, name: str, data: Any, dry_run: bool) -> dict[str, Any]:
        replicas = _dig(data, "spec.replicas") if isinstance(data, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                           f"{replicas!r}: must be greater than or equal to 0")
        body = json.dumps({"spec": {"replicas": replicas}}).encode()
        return self.cluster.patch(info, ns, name, body, "application/merge-patch+json", dry_run)

    async def _watch(self, info: _ResInfo, ns: str | None, query: dict[str, str], raw: Any) -> Any:
        import aiohttp.web

        c = self.cluster
        try:
            reqs = parse_label_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        timeout = min(float(query.get("timeoutSeconds", 300) or 300), 3600.0)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        w = _Watch(asyncio.get_running_loop(), queue, info.key, ns, reqs, query.get("fieldSelector", ""))
        with c.lock:
            initial = [] if query.get("resourceVersion") not in (None, "", "0") else self._list(info, ns, query)["items"]
            c.watches.append(w)
        resp = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            await resp.prepare(raw)
            for obj in initial:
                obj.update(kind=info.kind, apiVersion=info.api_version)
                await resp.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0 and self._started is not None:
                try:
                    event = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    break
                await resp.write(json.dumps(event).encode() + b"\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with c.lock:
                if w in c.watches:
                    c.watches.remove(w)
        try:
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp


_HANDLER_CLASS: Any = None


@dataclass
class _RawRequest:
    """The two things `KubeEmulator._handle` reads from kmock's request: the aiohttp request and its body."""

    _raw_request: Any
    body: bytes


def _make_handler_class() -> Any:
    """kmock.KubernetesEmulator with every request routed through `KubeEmulator._handle`."""
    global _HANDLER_CLASS
    if _HANDLER_CLASS is None:
        import kmock

        class _Handler(kmock.KubernetesEmulator):  # type: ignore[misc]
            def __init__(self, owner: KubeEmulator) -> None:
                super().__init__()
                self._owner = owner

            async def _handle(self, request: Any) -> Any:
                return await self._owner._handle(request)

            async def __call__(self, raw_request: Any) -> Any:
                # Resource requests skip kmock's parsing: it decodes every body as UTF-8 text (a
                # protobuf body from kubectl's typed clients fails there), cannot parse some paths
                # (`GET /api/v1/namespaces`) and keeps every request forever. Discovery goes through it.
                body = await raw_request.read()
                if _PATH.match(raw_request.path):
                    return await self._owner._handle(_RawRequest(raw_request, body))
                return await super().__call__(raw_request)

        _HANDLER_CLASS = _Handler
    return _HANDLER_CLASS


# -- command line ------------------------------------------------------------------------------------
def cli_main(argv: Iterable[str] | None = None) -> int:
    """`python -m runbook_lib.sim.kube`: serve the embedded cluster until Ctrl-C (or --run-for)."""
    p = argparse.ArgumentParser(prog="python -m runbook_lib.sim.kube",
                                description="Embedded Kubernetes API (kmock, extended) seeded with mistral-service.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_CLI_PORT, help=f"default {DEFAULT_CLI_PORT}; 0 picks a free one")
    p.add_argument("--namespace", default=NAMESPACE)
    p.add_argument("--kubeconfig-out", default=None, help="write a kubeconfig for the emulator here")
    p.add_argument("--user", default="ok", choices=sorted(USERS), help="whose token the kubeconfig holds")
    p.add_argument("--context", default="embedded", help="context name in the kubeconfig")
    p.add_argument("--log-file", default=None, help="serve this JSON-lines file as the app containers' log")
    p.add_argument("--api-key-env", default="MISTRAL_API_KEY",
                   help="store the key from this environment variable in the Secret (a random one if unset)")
    p.add_argument("--run-for", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(list(argv) if argv is not None else None)
    import os

    source = file_log_source(args.log_file) if args.log_file else None
    emu = KubeEmulator(host=args.host, port=args.port, namespace=args.namespace, log_source=source,
                       api_key=os.environ.get(args.api_key_env) or None)
    try:
        emu.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"Kubernetes API emulator: {emu.url} (namespace {args.namespace})", flush=True)
        if args.kubeconfig_out:
            path = emu.write_kubeconfig(args.kubeconfig_out, user=args.user, context_name=args.context)
            print(f"kubeconfig: {path} (context {args.context}, user {args.user})", flush=True)
        wait_for_stop_signal(args.run_for)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
