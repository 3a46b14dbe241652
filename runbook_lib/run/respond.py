"""`runbook respond`: one command per incident.

Runs triage, follows its decision to the diagnosis notebook (passing along the parameters both
share and the incident id), and keeps both records in one incident folder with a small index,
`incident.json`: id, times, severity, error class, notebooks run, changes applied. "Resolved" and
"our service only" outcomes stop after triage with that verdict.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import params
from .._time import iso_z
from ..errors import ParameterError
from ..record import applied_changes, read_records
from ..records import index_page, provenance
from ..records.incident import set_severity, update_index
from .catalog import available_notebooks, declared_parameters
from .execute import RunResult, new_record_dir, record_rejected_run, run_notebook


def respond(parameters: dict[str, Any], *, output_root: str | Path = "outputs", progress: bool = True,
            cell_timeout_s: int = 300, folder: str | Path | None = None,
            run_timeout_s: float | None = None) -> dict[str, Any]:
    """Triage, then the diagnosis the decision names; return the incident index (also written).

    `folder`: an incident folder made beforehand (by `runbook serve`, which records the alert
    there first); what its index already holds is kept. `cell_timeout_s` bounds every cell of both
    notebooks; `run_timeout_s` (None: each notebook's default) bounds the whole respond, triage and
    diagnosis together: the diagnosis gets what triage left, and its recovery watch ends before that.
    """
    parameters, t0 = dict(parameters), time.monotonic()
    try:
        check_respond_request(parameters, cell_timeout_s=cell_timeout_s, run_timeout_s=run_timeout_s)
    except ParameterError as exc:  # refused before any kernel, as `run` does: the failed record is kept
        record_rejected_respond(parameters, exc, output_root=output_root, folder=folder)
        raise
    parameters.setdefault("incident_id", params.default_incident_id())
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = new_record_dir(Path(output_root), parameters["incident_id"])
    # Only the sections respond owns are written (update_index): what others add meanwhile (the
    # alerts `runbook serve` appends while this runs) is kept.
    # Paths in incident.json are relative to the incident folder ("." is the folder itself), so the
    # archive can be copied or moved and still point inside itself.
    index: dict[str, Any] = {"id": str(parameters["incident_id"]), "folder": ".",
                             "operator": parameters.get("operator") or None,
                             "incident_commander": parameters.get("incident_commander") or None,
                             "provenance": provenance.code(),
                             "started_at": iso_z(), "finished_at": None, "status": "running",
                             "severity": None, "error_class": None, "verdict": None, "notebooks": [],
                             "changes_applied": []}
    update_index(folder, **index)

    triage_params = {k: v for k, v in parameters.items() if k in declared_parameters("triage")}
    def left() -> float | None:  # of the whole respond's bound, for the next notebook
        return None if run_timeout_s is None else max(1.0, run_timeout_s - (time.monotonic() - t0))
    triage = run_notebook("triage", triage_params, output_root=output_root, progress=progress,
                          cell_timeout_s=cell_timeout_s, record_dir=folder, run_timeout_s=left(),
                          on_verdict=lambda result: _record_triage_verdict(folder, index, result))
    _add(index, triage)
    if not Path(triage.notebook_path).exists():  # no notebook, no verdict callback: recorded here
        _record_triage_verdict(folder, index, triage)
    verdict = triage.verdict or {}
    next_notebook = verdict.get("notebook") if triage.ok else None

    if next_notebook:
        accepted = declared_parameters(next_notebook)
        diag_params = {k: v for k, v in parameters.items() if k in accepted}
        diag = run_notebook(next_notebook, diag_params, output_root=output_root, progress=progress,
                            cell_timeout_s=cell_timeout_s, record_dir=folder, run_timeout_s=left())
        _add(index, diag)
        records = read_records(diag.notebook_path) if Path(diag.notebook_path).exists() else {}
        index["changes_applied"] = [
            {"record": name, "action": v.get("action"), "target": v.get("target"), "at": v.get("at"),
             "who": v.get("who"), "undo": v.get("undo"), "verified": v.get("verified"),
             "set": [{"field": d.get("field"), "before": d.get("before"), "after": d.get("after")}
                     for d in v.get("diff") or [] if isinstance(d, dict)]}
            for name, v in applied_changes(records).items()]
        if diag.verdict and diag.verdict.get("line"):
            index["diagnosis"] = diag.verdict["line"]

    failed = [n for n in index["notebooks"] if n["status"] != "succeeded"]
    mitigated = _mitigated_at(index, records if next_notebook else {})
    # severity and its history belong to set_severity (triage, then any diagnosis that raised it)
    index.pop("severity", None)
    index.update(finished_at=iso_z(), status="failed" if failed else "mitigated" if mitigated else
                 ("diagnosed" if next_notebook else "triaged"))
    if mitigated:
        index["mitigated_at"] = mitigated
    final = update_index(folder, **index)
    if final.get("alert_state") == "resolved" and final.get("status") != "failed":  # its alerts ended meanwhile
        final = update_index(folder, status="resolved",
                             resolved_at=final.get("resolved_at") or (final.get("resolved") or {}).get("at"))
    index_page.write(folder)  # severity, class and status changed after the last run wrote it
    return {**final, "folder": str(folder)}  # the caller gets the real path


def check_respond_request(parameters: dict[str, Any], *, cell_timeout_s: object = 300,
                          run_timeout_s: object = None,
                          flag_names: tuple[str, str] = ("--cell-timeout", "--run-timeout")) -> None:
    """What must hold before respond starts a kernel: known names, a usable incident id, bounds that fit.

    The id names the folder and goes into incident.json as given, so a bad one (empty included,
    however it was passed) is refused here rather than recorded; an unknown name's value is not
    shown (it is often a misplaced secret). The bounds are checked as `runbook run` checks them,
    including a recovery watch (`monitor_max_s`) that could not end before them.
    """
    from .execute import MAX_RUN_TIMEOUT_S, WAIT_PARAMETER, check_run_timeout, check_wait_fits

    known = set().union(*(declared_parameters(n) for n in available_notebooks()))
    for name in sorted(parameters):
        if name not in known:
            raise ParameterError(name, "<not shown>", "a parameter declared by a runbook notebook: "
                                 + ", ".join(sorted(known)))
    if "incident_id" in parameters:
        params.incident_id("incident_id", parameters["incident_id"])
    cell = params.timeout(flag_names[0], cell_timeout_s, maximum=MAX_RUN_TIMEOUT_S)
    run = None if run_timeout_s is None else check_run_timeout(run_timeout_s, flag_names[1])
    for name in available_notebooks():
        if WAIT_PARAMETER in declared_parameters(name):  # the diagnosis respond may pick
            check_wait_fits(parameters, cell, run, flag_names, name)


def record_rejected_respond(parameters: dict[str, Any], error: ParameterError, *,
                            output_root: str | Path = "outputs", folder: str | Path | None = None) -> dict[str, Any]:
    """A respond refused before triage: an incident folder marked failed, with why, like a refused `run`.

    incident.json (status failed, the error) and `triage.run.json` (via `record_rejected_run`: no
    value of an undeclared or secret-holding parameter is recorded); returns the index with the real
    folder. The folder name never comes from an invalid id.
    """
    parameters = {"incident_id": params.default_incident_id(), **parameters}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = new_record_dir(Path(output_root), parameters["incident_id"])
    rejected = record_rejected_run("triage", parameters, error, output_root=output_root, record_dir=folder)
    index: dict[str, Any] = {"id": rejected.incident_id, "folder": ".", "provenance": provenance.code(),
                             "started_at": rejected.started_at, "finished_at": rejected.finished_at,
                             "status": "failed", "error": rejected.error, "verdict": None, "notebooks": [],
                             "changes_applied": []}
    _add(index, rejected)
    final = update_index(folder, **index)
    index_page.write(folder)
    return {**final, "folder": str(folder)}


def _mitigated_at(index: dict[str, Any], records: dict[str, Any]) -> str | None:
    """When a change applied by the diagnosis was followed by our service answering normally again.

    Only then is the incident "mitigated" (the postmortem later measures when the impact really
    ended); a change after which calls still fail leaves it "diagnosed".
    """
    after = records.get("state_after") if isinstance(records.get("state_after"), dict) else {}
    if index.get("changes_applied") and after.get("service_status") == "ok" and after.get("api_verdict") == "ok":
        return iso_z()
    return None


def _record_triage_verdict(folder: Path, index: dict[str, Any], result: RunResult) -> None:
    """The triage's verdict into incident.json as soon as it is known (before its HTML is rendered):
    what `runbook list`/`show` and serve read, and what an on-call engineer waits for. The severity
    first, so an index that shows the verdict shows its severity too."""
    verdict = result.verdict or {}
    index.update(error_class=verdict.get("branch"), verdict=verdict.get("line"))
    if verdict.get("severity"):  # the incident's one severity starts here; diagnoses may raise it (history)
        why = (read_records(result.notebook_path).get("severity") or {}).get("reason") or verdict.get("line")
        set_severity(folder, verdict["severity"], by="triage", why=str(why))
    update_index(folder, error_class=index["error_class"], verdict=index["verdict"])


def _add(index: dict[str, Any], result: RunResult) -> None:
    index["notebooks"].append({"name": result.notebook, "status": result.status,
                               "path": Path(result.notebook_path).name if result.notebook_path else None,
                               "html": Path(result.html_path).name if result.html_path else None,
                               "verdict": (result.verdict or {}).get("line"),
                               "error": result.error, "duration_s": result.duration_s})
