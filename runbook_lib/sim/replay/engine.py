"""Run a replay: the embedded stack playing the original's fault, then `respond` into a new folder.

Replays never touch a real endpoint. The parameters a replay passes are the original's with every
address replaced by the stack's (the Mistral simulator, our service simulator, its status feed,
the cluster emulator's kubeconfig; no Prometheus in this slice), files of the original machine
dropped, and each replacement recorded; a value still naming anything else is refused. The kernel
gets a scrubbed environment: only the process basics, a throwaway API key, and KUBECONFIG for the
emulator, so no Slack, PagerDuty, status page, Grafana, Vault or cluster credential reaches it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ... import params
from ..._time import iso_z
from ...demo import full_stack
from ...errors import ParameterError
from ...records.incident import update_index
from ...run.catalog import available_notebooks, declared_parameters
from ...run.execute import new_record_dir
from ...run.respond import respond
from . import fault as faults
from .cluster import seed as seed_cluster
from .source import METRIC_EXPORTS, Original

# Set by the replay from the stack (never from the original): the addresses the runbooks reach.
STACK_PARAMETERS = ("mistral_url", "service_health_url", "status_feed_url", "prometheus_url", "kubeconfig",
                    "kube_context", "secret_store")
# Files and credentials of the original's machine: meaningless against the stack, dropped.
DROPPED = ("ca_bundle", "prometheus_bearer_token_file", "prometheus_ca_bundle", "prometheus_client_cert",
           "prometheus_client_key", "prometheus_headers", "prometheus_password_env", "prometheus_username",
           "PAPERMILL_OUTPUT_PATH")
# The environment the kernel keeps (everything else is removed for the replay's duration).
KEEP_ENV = re.compile(r"^(PATH|HOME|USER|LOGNAME|SHELL|TERM|TZ|LANG|LANGUAGE|LC_[A-Z_]+|TMPDIR|TMP|TEMP|"
                      r"PYTHON[A-Z_]*|VIRTUAL_ENV|JUPYTER_[A-Z_]+|JPY_[A-Z_]+|IPYTHONDIR|MPLBACKEND|MPLCONFIGDIR|"
                      r"XDG_[A-Z_]+|SSL_CERT_FILE|SSL_CERT_DIR|RUNBOOK_OUTPUTS|CI|COVERAGE_[A-Z_]+|COV_CORE_[A-Z_]+)$")
NOT_REBUILT = ["cluster: Secrets, ReplicaSet history and pod statuses stay the emulator's (the bundle redacts "
               "Secrets); pod logs, events and the deployment's literal env are seeded (replay.cluster)"]
NO_METRICS = ("Prometheus: the original's bundle holds no metrics exports, so prometheus_url is empty (the runbooks' "
              "metric steps say 'not configured'); evidence and postmortem are not re-run")


@dataclass
class Replay:
    """A finished replay: its folder, index, and what it changed relative to the original."""

    folder: Path
    index: dict[str, Any]
    section: dict[str, Any] = field(default_factory=dict)


def replay(original: Original, *, output_root: str | Path, incident_id: str | None = None, settle_s: float = 15.0,
           max_wait_s: float = 30.0, progress: bool = False) -> Replay:
    """Rebuild `original` on the embedded stack and run `respond` into a new folder marked `replay_of`."""
    rid = params.incident_id("--incident-id", incident_id or _replay_id(original.id))
    fault = faults.plan(original)
    root = Path(output_root).resolve()
    key = "sim-" + secrets.token_urlsafe(24)
    api_key_env = str(original.parameters.get("api_key_env") or "MISTRAL_API_KEY")
    params.env_var_name("api_key_env", api_key_env)
    section: dict[str, Any] = {"of": original.id, "source": str(original.path), "started_at": iso_z(),
                               "fault": fault.to_dict(), "parameters_from": original.parameters_from,
                               "missing": original.missing, "not_rebuilt": NOT_REBUILT}
    if original.logs is not None:
        section["logs"] = {**original.logs, "agree_with_probes": faults.logs_agree(original, fault)}
    folder = new_record_dir(root, rid)
    kubeconfig_path = root / ".embedded" / f"kubeconfig-{folder.name}.yaml"
    with contextlib.ExitStack() as later, scrubbed_env({api_key_env: key}) as env, \
            full_stack(key, use_prometheus=False) as (stack, kube, _):
        kubeconfig = str(kube.write_kubeconfig(kubeconfig_path))
        os.environ["KUBECONFIG"] = kubeconfig
        section["environment"] = env
        prometheus_url, loaded = _bundle_prometheus(original, later)
        if loaded is None:
            section["not_rebuilt"] = [*NOT_REBUILT, NO_METRICS]
        else:
            section["prometheus"] = {**loaded.to_dict(), "url": prometheus_url}
        anchor = _epoch(original.index.get("started_at"))
        shift = loaded.shift_s if loaded is not None else float(round(time.time() - anchor)) if anchor else 0.0
        section["cluster"] = seed_cluster(kube, original.bundle, shift)
        alerts = _shifted_alerts(original.index.get("alerts"), shift)
        if alerts:  # the notifications that opened the original: its detection time is measured from them
            update_index(folder, alerts=alerts)
            section["alerts"] = {"copied": len(alerts), "shift_s": shift}
        if fault.refuse:
            stack.refuse_connections()
        elif fault.script:  # the recorded answers, burst by burst (sim/mistral.py set_script)
            stack.mistral.set_script(fault.script, gap_s=faults.GAP_S)
        else:
            stack.set_mode(fault.mode, **fault.options)
        section["service"] = _settle(original, stack, settle_s)
        parameters, changed = build_parameters(original, stack, kubeconfig=kubeconfig, incident_id=rid,
                                               max_wait_s=max_wait_s, prometheus_url=prometheus_url)
        check_on_stack(parameters, stack, prometheus_url)
        section["parameters"] = changed
        update_index(folder, replay_of=original.id, replay=section)
        print(f"replay: {original.id} ({fault.to_dict()['mode']}{', recorded answers' if fault.script else ''}) "
              f"into {folder}", file=sys.stderr, flush=True)
        index = respond(parameters, output_root=root, folder=folder, progress=progress)
        if loaded is not None:
            section["afterwards"] = _evidence_and_postmortem(original, folder, root, rid, parameters, loaded,
                                                             stack, progress)
    kubeconfig_path.unlink(missing_ok=True)  # it named an emulator that is gone
    index = update_index(folder, replay_of=original.id, replay={**section, "finished_at": iso_z()})
    return Replay(folder=folder, index={**index, "folder": str(folder)}, section=section)


def _replay_id(original_id: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "-", original_id).strip(".-")[:56] or "incident"
    return f"{base}-replay"


def _settle(original: Original, stack: Any, settle_s: float) -> dict[str, Any]:
    """Wait (bounded) until our service shows what triage recorded of it; say whether it did."""
    recorded = (original.triage.get("service_health") or {}).get("status") or \
        (original.triage.get("verdict") or {}).get("service_status")
    if recorded not in ("ok", "degraded", "down"):
        return {"recorded": recorded, "waited_for": None, "note": "no state of our service to wait for"}
    reached = stack.wait_for_service_status({recorded}, timeout_s=settle_s)
    return {"recorded": recorded, "waited_for": recorded, "reached": reached, "within_s": settle_s,
            "now": stack.service_status()}


def _bundle_prometheus(original: Original, later: contextlib.ExitStack) -> tuple[str, Any]:
    """A real Prometheus on the bundle's series shifted to now (replay/prom.py says why), or ("", None)."""
    from . import prom

    if not any(name in original.frames for name in METRIC_EXPORTS):
        return "", None
    work = Path(later.enter_context(prom.temporary_dir()))
    anchor = _epoch(original.index.get("started_at"))
    loaded, storage = prom.load(original.frames, original.manifest, anchor=anchor,
                                selector=str(original.parameters.get("metrics_selector") or ""), workdir=work)
    server = prom.BundlePrometheus(storage, scrape_s=loaded.scrape_s, lookback_s=max(300.0, 2 * loaded.step_s))
    later.enter_context(server)
    print(f"replay: Prometheus {server.url} on the bundle's series ({sum(loaded.series.values())} samples, "
          f"shifted {loaded.shift_s:+.0f} s)", file=sys.stderr, flush=True)
    return server.url, loaded


def _evidence_and_postmortem(original: Original, folder: Path, root: Path, rid: str, parameters: dict[str, Any],
                             loaded: Any, stack: Any, progress: bool) -> dict[str, Any]:
    """Evidence over the original's window (shifted like the series), then the postmortem, in the replay's folder.

    Why the original's window: the postmortem's impact window and counts come from the exports, so
    collecting exactly the same (shifted) span makes them comparable sample for sample.
    """
    from ...run.execute import run_notebook

    done: dict[str, Any] = {}
    window = (original.index.get("evidence") or {}).get("window") or {}
    start, end = _epoch(window.get("start")), _epoch(window.get("end"))
    ev = {"incident_folder": str(folder), "prometheus_url": parameters["prometheus_url"],
          "kubeconfig": parameters["kubeconfig"], "kube_context": "", "timeout_s": 5.0,
          "metrics_selector": parameters.get("metrics_selector", "")}
    ev = {k: v for k, v in ev.items() if k in declared_parameters("evidence")}
    if start is not None and end is not None:
        ev.update(window_start=iso_z(start + loaded.shift_s), window_end=iso_z(end + loaded.shift_s))
    check_on_stack(ev, stack, parameters["prometheus_url"])
    result = run_notebook("evidence", ev, output_root=root, progress=progress, record_dir=folder)
    done["evidence"] = {"ok": result.ok, "error": result.error, "window": {k: ev.get(k) for k in
                                                                           ("window_start", "window_end")}}
    if not result.ok:
        return done
    pm_given = original.records.get("postmortem", {}).get("parameters") or {}
    pm = {k: v for k, v in pm_given.items() if k in ("min_error_ratio", "min_errors", "max_gap_steps",
                                                    "latency_threshold_s")}
    pm.update(source=str(folder), incident_id=rid, apply_changes=False)
    pm = {k: v for k, v in pm.items() if k in declared_parameters("postmortem")}
    result = run_notebook("postmortem", pm, output_root=root, progress=progress, record_dir=folder)
    done["postmortem"] = {"ok": result.ok, "error": result.error, "parameters": pm}
    return done


def _shifted_alerts(alerts: Any, shift_s: float) -> list[dict[str, Any]]:
    """The original's Alertmanager notifications (`runbook serve` kept them), their times moved by `shift_s`."""
    out = []
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, dict):
            continue
        alert = dict(alert)
        for key in ("starts_at", "ends_at", "received_at"):
            when = _epoch(alert.get(key)) if not str(alert.get(key) or "").startswith("0001-") else None
            if when is not None:
                alert[key] = iso_z(when + shift_s)
        out.append(alert)
    return out


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        from datetime import datetime

        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def build_parameters(original: Original, stack: Any, *, kubeconfig: str, incident_id: str,
                     max_wait_s: float, prometheus_url: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The replay's respond parameters, and what was replaced, dropped or forced (for its record)."""
    known = set().union(*(declared_parameters(n) for n in available_notebooks()))
    given = {k: v for k, v in original.parameters.items() if k in known}
    out = {k: v for k, v in given.items() if k not in STACK_PARAMETERS and k not in DROPPED}
    stack_values = {"mistral_url": stack.mistral_url, "status_feed_url": f"{stack.mistral_url}/feed.rss",
                    "service_health_url": stack.service_health_url if given.get("service_health_url", True) else "",
                    "prometheus_url": prometheus_url, "kubeconfig": kubeconfig, "kube_context": "", "secret_store": ""}
    out.update(stack_values)
    replaced = {k: {"was": _shown(given[k]), "now": v} for k, v in stack_values.items()
                if k in given and given[k] != v}
    dropped = {k: _shown(given[k]) for k in DROPPED if given.get(k) not in (None, "", [])}
    for name, value in list(out.items()):  # anything else naming an address outside the stack
        if isinstance(value, str) and "://" in value and name not in stack_values:
            dropped[name] = _shown(value)
            del out[name]
    forced = {"incident_id": incident_id, "operator": "runbook replay", "apply_changes": False}
    wait = out.get("monitor_max_s")  # absent: the notebook's default (240 s) would be watched out in full
    if not isinstance(wait, int | float) or wait > max_wait_s:
        forced["monitor_max_s"] = max_wait_s
    out.update(forced)
    return out, {"replaced": replaced, "dropped": dropped, "forced": forced,
                 "real_endpoints_replaced": sorted(k for k, v in replaced.items() if _outside(v["was"]))}


def check_on_stack(parameters: dict[str, Any], stack: Any, prometheus_url: str = "") -> None:
    """Refuse any parameter whose value names an address other than the embedded stack's."""
    allowed = {urlsplit(stack.mistral_url).netloc, urlsplit(stack.service_health_url).netloc}
    if prometheus_url:
        allowed.add(urlsplit(prometheus_url).netloc)
    for name, value in parameters.items():
        if isinstance(value, str) and "://" in value and urlsplit(value).netloc not in allowed:
            raise ParameterError(name, value, "an address of the embedded stack (" + ", ".join(sorted(allowed))
                                 + "): a replay never reaches a real endpoint")


def _shown(value: Any) -> Any:
    """A recorded original value: a URL as scheme://host[:port]/path only (no credentials, no query)."""
    if isinstance(value, str) and "://" in value:
        u = urlsplit(value)
        return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"
    return value


def _outside(value: Any) -> bool:
    host = urlsplit(value).hostname if isinstance(value, str) and "://" in value else None
    return bool(host) and host not in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def scrubbed_env(extra: dict[str, str]) -> Iterator[dict[str, Any]]:
    """This process's environment (inherited by the kernels) reduced to KEEP_ENV plus `extra`; restored after.

    Yields what the record says of it: the names removed (never a value) and those set.
    """
    saved = dict(os.environ)
    removed = sorted(k for k in saved if not KEEP_ENV.match(k))
    try:
        for name in removed:
            del os.environ[name]
        os.environ.update(extra)
        yield {"removed": removed, "set": sorted([*extra, "KUBECONFIG"])}
    finally:
        os.environ.clear()
        os.environ.update(saved)
