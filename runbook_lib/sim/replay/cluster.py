"""Seed the cluster emulator from the evidence bundle: pod logs, events, the deployment's literal env.

Why: the diagnoses' cluster steps read the pods' logs (failed calls by class), the events and the
deployment's configuration (e.g. MAX_CONCURRENT_REQUESTS, RATE_LIMIT_MODE); left at the emulator's
defaults and its live logs, a replay would judge today's cluster, not the incident's.

What is seeded, each timestamp moved by the same offset as the Prometheus series (`prom.py` says why):
- pod logs (`logs/pods.jsonl`, previous containers too): the original's pods mapped in name order
  onto the emulator's, and the emulator stops serving our service simulator's live log, so the
  replay reads the original's lines only;
- events (`k8s/events.json`): the emulator's own events removed, the original's added (involved
  object, reason, message, type, count, last seen);
- the deployment's literal env values (`k8s/deployment.json`, those not redacted) written into the
  stored template, without a rollout (a rollout would add events and pods the original never had).
Not seeded: Secrets (redacted in the bundle: the emulator keeps its own, holding the replay's
throwaway key), ReplicaSet history and pod statuses (the emulator's stay).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def seed(kube: Any, bundle: Path | None, shift_s: float, namespace: str | None = None) -> dict[str, Any]:
    """Seed `kube` (a running `sim.kube.KubeEmulator`) from `bundle`; what was seeded and what was not."""
    done: dict[str, Any] = {"shift_s": shift_s, "missing": []}
    if bundle is None:
        done["missing"].append("evidence bundle: the emulator keeps its default objects and our service "
                               "simulator's live logs")
        return done
    ns = namespace or kube.namespace
    c = kube.cluster
    logs_file = bundle / "logs" / "pods.jsonl"
    if logs_file.is_file():
        done["logs"] = _seed_logs(kube, c, ns, logs_file, shift_s)
    else:
        done["missing"].append("logs/pods.jsonl: the emulator serves our service simulator's live logs")
    events_file = bundle / "k8s" / "events.json"
    if events_file.is_file():
        done["events"] = _seed_events(c, ns, json.loads(events_file.read_text("utf-8")), shift_s)
    else:
        done["missing"].append("k8s/events.json: the emulator's default events stay")
    dep_file = bundle / "k8s" / "deployment.json"
    if dep_file.is_file():
        done["env"] = _seed_env(kube, c, ns, json.loads(dep_file.read_text("utf-8")))
    else:
        done["missing"].append("k8s/deployment.json: the emulator's default deployment env stays")
    return done


def _seed_logs(kube: Any, c: Any, ns: str, path: Path, shift_s: float) -> dict[str, Any]:
    lines: dict[tuple[str, str, bool], list[tuple[float, str]]] = defaultdict(list)
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            ts = _epoch(entry.get("ts")) if isinstance(entry, dict) else None
            if ts is None or not entry.get("pod") or entry.get("line") is None:
                continue
            key = (str(entry["pod"]), str(entry.get("container") or "app"), bool(entry.get("previous")))
            lines[key].append((ts + shift_s, _shift_line(str(entry["line"]), shift_s)))
    originals = sorted({pod for pod, _, _ in lines})
    ours = sorted(kube.pod_names(ns))
    mapping = {pod: ours[i % len(ours)] for i, pod in enumerate(originals)} if ours else {}
    with c.lock:
        c.log_source = None  # the live simulator's log is not the incident's
        c.logs.clear()
        c.previous_logs.clear()
        for (pod, container, previous), got in lines.items():
            if pod not in mapping:
                continue
            store = c.previous_logs if previous else c.logs
            store.setdefault((ns, mapping[pod], container), []).extend(sorted(got))
        for store in (c.logs, c.previous_logs):
            for key in store:
                store[key].sort()
        served = c.container_lines

        def until_now(namespace: str, pod: dict[str, Any], container: str, previous: bool) -> list[tuple[float, str]]:
            # a line the original logged after the moment the replay stands for is not written yet
            now = c.now()
            return [(t, line) for t, line in served(namespace, pod, container, previous) if t <= now]

        c.container_lines = until_now
    return {"lines": sum(len(v) for v in lines.values()), "pods": mapping,
            "note": "each line is served once its shifted time has come"}


def _shift_line(line: str, shift_s: float) -> str:
    """A JSON log line's own `ts` moved like its timestamp (our service logs JSON with `ts`)."""
    if not line.startswith("{"):
        return line
    try:
        value = json.loads(line)
    except ValueError:
        return line
    ts = _epoch(value.get("ts")) if isinstance(value, dict) else None
    if ts is None:
        return line
    from ..._time import iso_z

    value["ts"] = iso_z(ts + shift_s)
    return json.dumps(value)


def _seed_events(c: Any, ns: str, events: Any, shift_s: float) -> dict[str, Any]:
    info = c.info("", "v1", "events")
    added = 0
    with c.lock:
        for old in c.items(info, ns):
            c._remove(info, ns, old["metadata"]["name"])
        for ev in events if isinstance(events, list) else []:
            if not isinstance(ev, dict):
                continue
            last = _epoch(ev.get("last_seen"))
            kind, _, name = str(ev.get("object") or "").partition("/")
            if last is None or not name:
                continue
            involved = {"kind": _KINDS.get(kind.lower(), kind.capitalize()), "name": name, "namespace": ns}
            c._event(ns, involved, str(ev.get("type") or "Normal"), str(ev.get("reason") or ""),
                     str(ev.get("message") or ""), str(ev.get("source") or ""), count=int(ev.get("count") or 1),
                     last=last + shift_s)
            added += 1
    return {"added": added}


_KINDS = {"pod": "Pod", "deployment": "Deployment", "replicaset": "ReplicaSet", "service": "Service",
          "endpoints": "Endpoints", "node": "Node", "horizontalpodautoscaler": "HorizontalPodAutoscaler"}


def _seed_env(kube: Any, c: Any, ns: str, summary: Any) -> dict[str, Any]:
    """The original's literal, unredacted env values written into the stored deployment (no rollout)."""
    values = {(str(e.get("container")), str(e.get("name"))): str(e.get("value"))
              for cont in (summary.get("containers") or [] if isinstance(summary, dict) else [])
              for e in cont.get("env") or [] if isinstance(e, dict) and e.get("source") == "literal"
              and not e.get("redacted") and e.get("value") is not None}
    info = c.info("apps", "v1", "deployments")
    changed: dict[str, str] = {}
    with c.lock:
        dep = c.get(info, ns, kube.deployment)
        if dep is None:
            return {"changed": changed, "note": "the emulator has no deployment to seed"}
        for container in dep["spec"]["template"]["spec"].get("containers") or []:
            env = container.setdefault("env", [])
            for (cname, name), value in values.items():
                if cname != container.get("name"):
                    continue
                item = next((e for e in env if e.get("name") == name), None)
                if item is None:
                    env.append({"name": name, "value": value})
                elif "valueFrom" not in item and item.get("value") != value:
                    item["value"] = value
                else:
                    continue
                changed[name] = value
        if changed:
            dep["metadata"]["resourceVersion"] = c._next_rv()
            c._store(info, dep, "MODIFIED")
    return {"changed": changed}
