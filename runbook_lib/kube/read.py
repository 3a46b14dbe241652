"""Kubernetes, read side: what the seed runbook's `kubectl get`/`rollout` commands show, as plain data.

`ClusterReads` adds the reads to the transport (`_client.ClusterClient`): pods, events, the
deployment, its rollout status and revision history, its manifests, and a Secret key's
fingerprint. Each is bounded by one deadline (`timeout_s` for the whole call, however many
requests it makes; no retries) and returns a `KubeResult`: the data (dicts and lists; `.frame()`
gives a pandas DataFrame), the equivalent `kubectl` command, and, when the cluster said no or did
not answer, a `KubeFinding` in words instead of an exception.

Nothing here writes to the cluster, and no secret value is ever returned: env values whose name or
shape looks secret are replaced by a fingerprint, Secret data only ever yields a fingerprint, and
event messages and change causes are scrubbed of tokens.

For the write side (`kube.write`): `ClusterReads.read_deployment`, `.owned_replica_sets`,
`rollout_status_of` and `env_entry`.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from .. import params
from .._time import epoch, iso_z
from ..redact import scrub, secret_looking
from ..secrets import fingerprint
from ._client import ClusterClient, KubeResult, object_name


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_z(ts)


# -- views -----------------------------------------------------------------------------------------------
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
        finished = epoch(last.get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        containers.append({"name": c.get("name"), "image": c.get("image"), "ready": bool(s.get("ready")),
                           "restarts": int(s.get("restartCount") or 0), "state": state_name,
                           "reason": (state.get(state_name) or {}).get("reason") if state else None,
                           "last_exit_reason": last.get("reason"), "last_exit_code": last.get("exitCode"),
                           "last_exit_at": last.get("finishedAt")})
    created = epoch(meta.get("creationTimestamp"))
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


def rollout_status_of(dep: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl rollout status` says of this deployment object: done, failed, or what it waits for."""
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


# -- the reads ----------------------------------------------------------------------------------------
class ClusterReads(ClusterClient):
    """Read-only views of one cluster. Each method: one deadline of `timeout_s`, a `KubeResult`."""

    # ---- raw objects (also for the write side) ------------------------------------------------
    def list_pods(self, deadline: float, namespace: str, selector: str, kubectl: str) -> list[dict[str, Any]]:
        """The pods `selector` selects, as stored, sorted by name."""
        core = self.apis().CoreV1Api(self.api_client)
        body = self.request(deadline, core, "list_namespaced_pod", namespace, label_selector=selector,
                            verb="list", resource="pods", namespace=namespace, kubectl=kubectl)
        return sorted(body.get("items") or [], key=lambda p: p["metadata"]["name"])

    def read_deployment(self, deadline: float, namespace: str, name: str, kubectl: str) -> dict[str, Any]:
        """The deployment as stored (a KubeFailure with a finding when it cannot be read)."""
        apps = self.apis().AppsV1Api(self.api_client)
        return self.request(deadline, apps, "read_namespaced_deployment", name, namespace, verb="get",
                            resource="deployments.apps", namespace=namespace, name=name, kubectl=kubectl)

    def owned_replica_sets(self, deadline: float, namespace: str, dep: dict[str, Any],
                           kubectl: str) -> list[dict[str, Any]]:
        """The deployment's ReplicaSets: its selector's, owned by its uid (when it has one)."""
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        apps = self.apis().AppsV1Api(self.api_client)
        body = self.request(deadline, apps, "list_namespaced_replica_set", namespace,
                            label_selector=",".join(f"{k}={v}" for k, v in labels.items()),
                            verb="list", resource="replicasets.apps", namespace=namespace, kubectl=kubectl)
        uid = dep["metadata"].get("uid")
        return [rs for rs in body.get("items") or [] if not uid or any(
            o.get("uid") == uid for o in (rs.get("metadata") or {}).get("ownerReferences") or [])]

    # ---- views ----------------------------------------------------------------------------------
    def pods(self, namespace: str = "default", selector: str = "app=mistral-service") -> KubeResult:
        """`kubectl get pods -l SELECTOR -o wide`: status, ready, restarts, last restart, node, per container."""
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        cmd = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "wide")

        def run(deadline: float) -> list[dict[str, Any]]:
            now = time.time()
            return [_pod_row(p, now) for p in self.list_pods(deadline, namespace, selector, cmd)]

        return self.run("pods", cmd, run)

    def events(self, namespace: str = "default", limit: int = 200) -> KubeResult:
        """`kubectl get events --sort-by=.lastTimestamp`: oldest first, the newest `limit` kept.

        The time is lastTimestamp, else eventTime (events written through events.k8s.io have no
        lastTimestamp), else series.lastObservedTime, firstTimestamp, creationTimestamp.
        """
        namespace = params.namespace("namespace", namespace)
        limit = params.positive_int("limit", limit, maximum=10_000)
        cmd = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")

        def run(deadline: float) -> list[dict[str, Any]]:
            core = self.apis().CoreV1Api(self.api_client)
            body = self.request(deadline, core, "list_namespaced_event", namespace, verb="list", resource="events",
                                namespace=namespace, kubectl=cmd)
            now = time.time()
            rows = []
            for ev in body.get("items") or []:
                t = (epoch(ev.get("lastTimestamp")) or epoch(ev.get("eventTime"))
                     or epoch((ev.get("series") or {}).get("lastObservedTime")) or epoch(ev.get("firstTimestamp"))
                     or epoch((ev.get("metadata") or {}).get("creationTimestamp")))
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

        return self.run("events", cmd, run)

    def deployment(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """The deployment: replicas, images, revision, conditions and env (secret values never shown).

        Env values whose name looks secret (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, ...) or whose
        value is shaped like one become a fingerprint; `valueFrom` shows the reference, not the value.
        Annotations are not returned (`last-applied-configuration` holds literal env values).
        """
        namespace = params.namespace("namespace", namespace)
        name = object_name(name)
        cmd = self.kubectl("get", "deployment", name, "-n", namespace, "-o", "yaml") + " # env values redacted"

        def run(deadline: float) -> dict[str, Any]:
            return _deployment_view(self.read_deployment(deadline, namespace, name, cmd))

        return self.run("deployment", cmd, run, rows_key="env")

    def rollout_status(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """`kubectl rollout status deployment/NAME --watch=false`: done or what it is waiting for."""
        namespace = params.namespace("namespace", namespace)
        name = object_name(name)
        cmd = self.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--watch=false")

        def run(deadline: float) -> dict[str, Any]:
            return rollout_status_of(self.read_deployment(deadline, namespace, name, cmd))

        return self.run("rollout_status", cmd, run)

    def revision_history(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """`kubectl rollout history deployment/NAME`, from the deployment's ReplicaSets.

        Each revision: ReplicaSet, created, change cause, images, replicas, whether it is current,
        and what changed from the revision before (images; env names, values only when not secret).
        """
        namespace = params.namespace("namespace", namespace)
        name = object_name(name)
        cmd = self.kubectl("rollout", "history", f"deployment/{name}", "-n", namespace)

        def run(deadline: float) -> list[dict[str, Any]]:
            dep = self.read_deployment(deadline, namespace, name, cmd)
            current = str(((dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")) or "")
            rows = []
            for rs in self.owned_replica_sets(deadline, namespace, dep, cmd):
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

        return self.run("revision_history", cmd, run)

    def manifests(self, namespace: str = "default", name: str = "mistral-service") -> KubeResult:
        """The deployment and its ReplicaSets as stored (`kubectl get deployment,rs -o yaml`), redacted.

        For the evidence bundle: the whole objects a reviewer would diff, with Secret-looking env
        values, the last-applied annotation and key-shaped strings replaced by fingerprints.
        """
        from ..redact import redact_object

        namespace = params.namespace("namespace", namespace)
        name = object_name(name)
        cmd = self.kubectl("get", f"deployment/{name}", "-n", namespace, "-o", "yaml")
        shown = {"cmd": cmd}

        def run(deadline: float) -> dict[str, Any]:
            dep = self.read_deployment(deadline, namespace, name, cmd)
            owned = self.owned_replica_sets(deadline, namespace, dep, cmd)
            # the objects shown, by name: the deployment and the ReplicaSets it owns (by uid)
            shown["cmd"] = self.kubectl("get", f"deployment/{name}",
                                        *[f"replicaset/{rs['metadata']['name']}" for rs in owned],
                                        "-n", namespace, "-o", "yaml")
            return redact_object({"deployment": dep, "replicasets": owned})

        res = self.run("manifests", cmd, run)
        res.kubectl = shown["cmd"]  # the record holds them redacted; kubectl shows them as stored
        return res

    def secret_fingerprint(self, namespace: str = "default", name: str = "mistral-secrets",
                           key: str = "api-key") -> KubeResult:
        """Presence, length and SHA-256 fingerprint of one Secret key; the value never leaves this call."""
        namespace = params.namespace("namespace", namespace)
        name = object_name(name)
        key = params.text("key", key, allow_empty=False)
        cmd = (self.kubectl("get", "secret", name, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}")
               + " | base64 -d | sha256sum | cut -c1-12")

        def run(deadline: float) -> dict[str, Any]:
            core = self.apis().CoreV1Api(self.api_client)
            body = self.request(deadline, core, "read_namespaced_secret", name, namespace, verb="get",
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

        return self.run("secret_fingerprint", cmd, run)
