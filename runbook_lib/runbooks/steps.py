"""Steps shared by the diagnosis runbooks: common parameters, change records, messages, state after.

Every diagnosis notebook validates the same core parameters, shows a change the same way (dry run
or applied, diff, undo, who and when), drafts the seed's messages and ends by re-probing the API
and our service; the per-error modules hold only what differs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import comms
from .. import display, params, record
from ..sources import probes
from ..sources.metrics import ACCESS_PARAMETERS
from .._async import run_sync
from .._time import iso_z
from ..secrets import SecretRef, read_secret


def common_parameters(*, mistral_url: str, api_key_env: str, service_health_url: str, kubeconfig: str,
                      kube_context: str, namespace: str, deployment: str, container: str, timeout_s: float,
                      apply_changes: bool, operator: str, incident_id: str, incident_commander: str,
                      slack_webhook_env: str, affected_features: str = comms.DEFAULT_AFFECTED, ca_bundle: str = "",
                      prometheus_url: str | None = None, metrics_window: str | None = None,
                      papermill_output_path: str = "", **prometheus_access: Any) -> dict[str, Any]:
    """Validate the parameters every diagnosis notebook shares; the first bad one names itself.

    `prometheus_url`/`metrics_window` and the Prometheus access parameters (`metrics.ACCESS_PARAMETERS`:
    credentials, TLS, `metrics_selector`) only for the runbooks that read Prometheus (rate limit, 5xx):
    a notebook declares only the parameters it uses. `papermill_output_path` is the notebook's
    `PAPERMILL_OUTPUT_PATH` (set by `papermill --inject-output-path`): see `record_folder`.
    """
    flag = params.shared(apply_changes=apply_changes)  # checked first: it decides dry run or apply
    cfg = params.shared(
        mistral_url=mistral_url, api_key_env=api_key_env, service_health_url=service_health_url,
        kubeconfig=kubeconfig, kube_context=kube_context, namespace=namespace, deployment=deployment,
        container=container, timeout_s=timeout_s, **flag, operator=operator, incident_id=incident_id,
        incident_commander=incident_commander, slack_webhook_env=slack_webhook_env,
        affected_features=affected_features, ca_bundle=ca_bundle)
    metrics = {k: v for k, v in (("prometheus_url", prometheus_url), ("metrics_window", metrics_window))
               if v is not None}
    output = params.text(OUTPUT_PATH_PARAMETER, papermill_output_path, maximum=4096)
    unknown = sorted(set(prometheus_access) - set(ACCESS_PARAMETERS))
    if unknown:
        raise TypeError(f"common_parameters() got unexpected keyword argument {unknown[0]!r}")
    return {**cfg, **params.shared(**metrics), **params.prometheus_access(**prometheus_access),
            "papermill_output_path": output}


OUTPUT_PATH_PARAMETER = "PAPERMILL_OUTPUT_PATH"  # the name papermill's --inject-output-path gives it
NO_FOLDER = ("this kernel does not know where its output notebook is (plain `papermill` without "
             "`--inject-output-path`, or a runbook opened in place), so nothing was written to disk: the texts "
             "are above. To have them saved beside the output notebook, run papermill with `--inject-output-path` "
             "(or use `runbook run` / `runbook open`)")


def record_folder(output_path: str, runbook: str, cwd: Path | None = None) -> tuple[Path | None, str]:
    """Where this run's files go (message drafts, the severity in incident.json), and why: beside the record.

    1. `PAPERMILL_OUTPUT_PATH` (papermill's `--inject-output-path`) names the output notebook: its
       folder, once that file is seen to be a papermill output written for that very path (papermill
       writes it before the kernel starts; a relative path is read from the kernel's folder).
    2. Else the kernel's working directory when it is a record folder: `runbook run` runs the kernel
       in the record folder, `runbook open` in the incident folder; either holds `incident.json` or a
       `<runbook>*.ipynb`. Never the folder of the tracked runbooks (JupyterLab on `notebooks/`).
    3. Else None: plain papermill runs the kernel in the caller's directory, which says nothing about
       where the output goes; the drafts then stay in the record only, and the reason says so.
    """
    from ..paths import notebooks_dir

    here = (cwd or Path.cwd()).resolve()
    if output_path:
        if "://" in output_path:
            return None, (f"the output notebook `{output_path}` is not a local file, so nothing was written to disk: "
                          "the texts are above, in the record")
        target = (here / output_path).resolve()
        if _papermill_output_for(target, output_path):
            return target.parent, "beside the output notebook (`PAPERMILL_OUTPUT_PATH`)"
        return None, (f"`{OUTPUT_PATH_PARAMETER}` = `{output_path}` is not this run's output notebook as seen from "
                      f"the kernel's folder (with papermill's `--cwd`, give the output as an absolute path), so "
                      "nothing was written to disk: the texts are above")
    if here != notebooks_dir().resolve() and (comms.has_index(here) or any(here.glob(f"{runbook}*.ipynb"))):
        return here, "in the record folder"
    return None, NO_FOLDER


def _papermill_output_for(path: Path, given: str) -> bool:
    """Whether `path` is the notebook papermill is writing for output path `given` (its metadata says so)."""
    import json

    for _attempt in range(3):  # papermill rewrites the file between cells: a torn read is retried
        try:
            meta = json.loads(path.read_text("utf-8")).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError, AttributeError):
            if not path.is_file():
                return False
            time.sleep(0.2)
            continue
        return (meta.get("output_path") == given
                and (meta.get("parameters") or {}).get(OUTPUT_PATH_PARAMETER) == given)
    return False


def show_parameters(cfg: dict[str, Any]) -> SecretRef:
    """Record the (secret-free) parameters, say dry run or apply, and show the key's fingerprint."""
    mode = ("**APPLY**: approved changes will be made and recorded" if cfg["apply_changes"] else
            "**DRY RUN**: changes are checked by the API server (`dryRun=All`) and shown; nothing is changed")
    record.record("parameters", cfg, markdown=f"{mode}.\n\n" + display.kv_table(cfg.items(), ("parameter", "value")))
    secret = read_secret(cfg["api_key_env"])
    record.record("api_key", secret.describe(), markdown=f"API key: {secret} (the key itself is never shown)")
    return secret


def show_change(name: str, change: Any) -> dict[str, Any]:
    """Record a `remediate.Change`: what state it is in, the kubectl, the diff, the undo, who and when."""
    value = change.to_dict()
    state = ("APPLIED and verified" if change.applied and change.verified else
             "APPLIED but NOT verified" if change.applied else
             "DRY RUN accepted by the API server" if change.dry_run_ok else "NOT possible")
    md = (f"**{state}**: `{change.kubectl}`\n\n"
          + (display.table(("field", "before", "after"), [(d["field"], d["before"], d["after"]) for d in change.diff])
             if change.diff else "No field changes.")
          + (f"\n\nUndo: `{change.undo}`" if change.undo else "")
          + (f"\n\nWhen: {change.at}, by: {change.who}"
             + (f" (the API server knows the credentials as `{change.identity}`)" if change.identity else
                f" ({change.identity_source or 'identity not checked'})")
             + (f"; annotated `kubernetes.io/change-cause`: {change.change_cause}" if change.change_cause else "")
             if change.applied else
             "\n\nTo apply: re-run with `apply_changes=True` (recorded with who, when, before and after).")
          + (f"\n\n{change.note}" if change.note else "")
          + (f"\n\n**{change.finding.status}**: {change.finding.message}" if change.finding else ""))
    record.record(name, value, markdown=md)
    return value


def incident_severity(cfg: dict[str, Any], proposed: str, why: str, *, by: str) -> str:
    """The incident's one severity as this diagnosis sees it, recorded; returns the level to use.

    In an incident folder (headless runs work in it) the current level stands unless this runbook's
    evidence is worse: then it is raised, with the reason, in `incident.json`'s severity history.
    Without an incident index the runbook's own assessment is the severity.
    """
    from ..analysis.severity import worse
    from ..records.incident import read_index, set_severity

    folder, _where = record_folder(cfg.get("papermill_output_path", ""), by)
    index = read_index(folder) if folder is not None else None
    current = (index or {}).get("severity")
    level = worse(current, proposed) or proposed
    if folder is not None and index is not None and (level != current or not index.get("severity_history")):
        set_severity(folder, level, by=by, why=why)
    held = current is not None and level == current and proposed != current
    value = {"level": level, "proposed": proposed, "why": why, "previous": current, "by": by,
             "source": "incident.json" if index is not None else "this runbook"}
    md = (f"**Incident severity: {level}**. "
          + (f"This runbook's evidence suggests {proposed} ({why}); the incident stays at {current}, "
             "the worse level already established." if held else
             f"Raised from {current} to {level}: {why}." if current and level != current else
             f"{why}." if current is None else f"Confirmed: {why}."))
    record.record("severity", value, markdown=md)
    return level


def communicate(cfg: dict[str, Any], *, level: str, status: str, impact: str, action: str,
                affected: list[str] | None = None, workaround: str = "", error_class: str | None = None,
                by: str | None = None) -> dict[str, Any]:
    """Draft the Slack and status-page messages for this incident, save and log them; tell people if approved.

    The configured services (the Slack webhook, `comms.notify`: the Slack thread, PagerDuty, the
    status page) are told only with `apply_changes`, else a dry run showing the exact request.

    The text follows the error class, `status` and `level` (the incident's one severity), so the
    status page never says "slower responses" during an outage. `by` is the runbook (default: the
    one that just recorded the severity); the class defaults to that runbook's, else incident.json's.
    Drafts go beside the record (`record_folder`: the incident folder under `runbook`, beside the
    output notebook under `papermill --inject-output-path`) and into its `communications` log; when
    the kernel cannot know that folder they stay in the record only, which says so and why.
    """
    from ..records.incident import read_index

    by = by or str((record.LOCAL.get("severity") or {}).get("by") or "runbook")
    folder, where = record_folder(cfg.get("papermill_output_path", ""), by)
    error_class = (error_class or comms.CLASS_OF_RUNBOOK.get(by)
                   or str(((read_index(folder) if folder else None) or {}).get("error_class") or "unknown"))
    chosen = comms.features(affected or cfg.get("affected_features"))
    msgs = comms.render(level=level, status=status, impact=impact, action=action, error_class=error_class,
                        commander=cfg.get("incident_commander", ""), operator=cfg.get("operator", ""),
                        affected=chosen, workaround=workaround)
    post = comms.post_to_slack(msgs, cfg["slack_webhook_env"], cfg["timeout_s"], approved=cfg["apply_changes"])
    entries = ([] if folder is None else
               comms.draft(msgs, folder=folder, by=by, status=status, level=level, affected=chosen, post=post))
    logged = folder is not None and comms.has_index(folder)
    sev = record.LOCAL.get("severity") or {}
    comms.notify(msgs, folder=folder, incident_id=cfg.get("incident_id", ""), status=status, level=level,
                 error_class=error_class, by=by, approved=cfg["apply_changes"], timeout_s=cfg["timeout_s"],
                 facts={"impact": impact, "action": action, "affected": chosen, "workaround": workaround,
                        "ic": msgs.ic, "next_update_utc": msgs.next_update_utc, "severity_why": sev.get("why")},
                 severity_note=str(sev.get("why") or "") if sev.get("previous") not in (None, level) else "",
                 auto=False)  # the Slack thread too waits for the approval
    value = {**msgs.to_dict(), "files": [e["file"] for e in entries], "saved": where,
             "at": iso_z(timespec="milliseconds"), "slack": post, "level": level, "status": status,
             "error_class": error_class, "affected": chosen, "by": by, "logged": logged}
    record.record("communications", value,
                  markdown=comms.record_markdown(msgs, post, entries, logged, unsaved_reason=where))
    return value


def state_after(cfg: dict[str, Any], secret: SecretRef, samples: int = 3) -> dict[str, Any]:
    """Re-probe the API and our service, concurrently and bounded: the situation at the end of the run."""

    async def go() -> tuple[Any, Any]:
        tls = cfg["mistral_url"].startswith("https:") or cfg["service_health_url"].startswith("https:")
        async with probes.client(cfg["timeout_s"], tls=tls, ca_bundle=cfg["ca_bundle"]) as c:
            api = probes.sample_mistral(c, cfg["mistral_url"], secret, cfg["timeout_s"], samples, 2000.0)
            if cfg["service_health_url"]:
                return await asyncio.gather(api, probes.probe_service(c, cfg["service_health_url"], cfg["timeout_s"]))
            return await api, None

    t0 = time.perf_counter()
    api, svc = run_sync(go())
    value = {"api_verdict": api.verdict, "api_counts": api.counts, "service_status": svc.status if svc else None,
             "checked_in_s": round(time.perf_counter() - t0, 2)}
    record.record("state_after", value, markdown=(
        f"Mistral API now: **{api.verdict}** ({display.counts(api.counts)}); our service: **{value['service_status'] or 'n/a'}**."))
    return value
