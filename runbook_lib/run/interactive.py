"""Interactive runs: a runbook opened in JupyterLab as a copy in its incident folder, sealed on save.

A tracked notebook never runs in place. `runbook open NOTEBOOK` makes (or reuses) an incident
folder under the output root, writes `<notebook>.ipynb` there with its parameters filled
(papermill's parameterize: nothing is executed), and notes it in `incident.json` (status
`interactive`). JupyterLab, started by `runbook open`/`runbook lab` with the hooks below
(`run.lab`), then:

- before each save (`pre_save_hook`) replaces any secret env value found in the copy by its
  fingerprint marker (`redact.redact_known`), so what lands on disk never holds a secret;
- after each save (`post_save_hook`) seals the copy: `<notebook>.run.json` (status `interactive`,
  parameters filtered as for a headless run), the HTML export with the record's banner, the
  notebook's entry in `incident.json` and `index.html`. When the verdict names the next runbook,
  that runbook is prepared beside it with the parameters carried over, so the verdict's link
  (`display.next_runbook`) opens it in the same folder.

Stopping the lab seals the copies it opened once more. The hooks act only on copies (notebook metadata
`runbook.interactive`) inside the output root `$RUNBOOK_OUTPUTS`: nothing is written elsewhere.
"""

from __future__ import annotations

import ast
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import KERNEL_NAME, params, redact
from .._time import iso_z, parse as parse_time
from ..errors import ParameterError, RunbookError
from ..paths import OUTPUTS_ENV, write_replacing
from ..record import applied_changes, read_records
from ..records import index_page, provenance
from ..records.incident import edit_index, read_index, set_severity
from ..secrets import secret_env_values, secret_held
from . import _lean
from .catalog import declared_parameters, resolve_notebook
from .execute import RESERVED_PARAMETERS, RunResult, check_run_request, new_record_dir

INTERACTIVE = "interactive"  # the status of an incident and of a record worked on in JupyterLab
META = "runbook"  # the copy's notebook metadata key (headless records use the same one)
NOT_RECORDED = "<not recorded: holds a secret's value>"


@dataclass(frozen=True)
class Opened:
    """A prepared copy: where it is, and whether this call made it (False: it was already there)."""

    notebook: str
    folder: Path
    path: Path
    created: bool


def inside_root(output_root: str | Path, path: str | Path, name: str = "--incident") -> Path:
    """`path` resolved, refused (naming `name`) unless it is a folder inside the output root."""
    root, target = Path(output_root).resolve(), Path(path).resolve()
    if target == root or not target.is_relative_to(root) or not target.is_dir():
        raise ParameterError(name, str(path), f"an incident folder inside the output root {root}")
    return target


def carried_parameters(folder: str | Path, notebook: str) -> dict[str, Any]:
    """What the folder's earlier runbooks were run with, as `notebook` declares it, and the incident's id.

    Read from the `*.run.json` files (oldest first, later ones win), whose values were already
    checked; a value that was not recorded (a secret's) is not carried.
    """
    folder = Path(folder)
    runs = []
    for path in folder.glob("*.run.json"):
        try:
            value = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(value, dict) and isinstance(value.get("parameters"), dict):
            runs.append(value)
    runs.sort(key=lambda r: str(r.get("started_at") or ""))
    accepted = declared_parameters(notebook) - set(RESERVED_PARAMETERS)
    carried: dict[str, Any] = {}
    for run in runs:
        carried.update({k: v for k, v in run["parameters"].items()
                        if k in accepted and not (isinstance(v, str) and v.startswith("<not recorded"))})
    known = str((read_index(folder) or {}).get("id") or "")
    if known and "incident_id" in accepted:
        carried["incident_id"] = known
    return carried


def prepare(notebook: str, parameters: dict[str, Any] | None = None, *, output_root: str | Path,
            incident_id: str | None = None, folder: str | Path | None = None,
            operator: str | None = None) -> Opened:
    """The runbook's copy with its parameters filled, in a new incident folder or in `folder`.

    The request is checked as `runbook run` checks it (the notebook, every parameter name, no
    secret's value, a valid incident id) before anything is written. A copy already in the folder
    is reused as it is (its parameters are not changed); a headless record of that runbook there
    is never overwritten.
    """
    parameters = dict(parameters or {})
    if incident_id is not None:
        parameters["incident_id"] = params.incident_id("--incident-id", incident_id)
    if folder is not None:
        folder = inside_root(output_root, folder)
        known = str((read_index(folder) or {}).get("id") or "")
        if known and parameters.setdefault("incident_id", known) != known:
            raise ParameterError("--incident-id", parameters["incident_id"],
                                 f"the id of the incident in {folder.name}: {known}")
    parameters.setdefault("incident_id", params.default_incident_id())
    check_run_request(notebook, parameters, strict_names=True)
    params.incident_id("incident_id", parameters["incident_id"])
    if folder is not None and (folder / f"{notebook}.ipynb").exists():
        existing = folder / f"{notebook}.ipynb"
        if not is_copy(existing):
            raise RunbookError(f"{existing} is the record of a headless run: it is never reopened for editing "
                               f"(read it, or its HTML); open another runbook or a new incident")
        return Opened(notebook, folder, existing, False)
    made = folder is None
    folder = folder or new_record_dir(Path(output_root), parameters["incident_id"])
    try:
        path = _write_copy(notebook, parameters, folder / f"{notebook}.ipynb")
    except BaseException:
        if made and not any(folder.iterdir()):  # no empty folder left to look like a crashed run
            folder.rmdir()
        raise
    with edit_index(folder) as index:
        if not index.get("started_at"):  # a new incident: opened by a person, in JupyterLab
            index.update(id=str(parameters["incident_id"]), folder=".", source="jupyterlab", status=INTERACTIVE,
                         started_at=iso_z(), finished_at=None, severity=None, error_class=None, verdict=None,
                         operator=operator or parameters.get("operator") or None, provenance=provenance.code(),
                         notebooks=[], changes_applied=[])
    index_page.write(folder)
    return Opened(notebook, folder, path, True)


def _write_copy(notebook: str, parameters: dict[str, Any], target: Path) -> Path:
    _lean.import_jsonschema_without_iri_checkers()  # ~1.7 s of start-up saved (see run/_lean.py)
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    source = resolve_notebook(notebook)
    nb = parameterize_notebook(load_notebook_node(str(source)), parameters, kernel_name=KERNEL_NAME,
                               language="python")
    nb.metadata.setdefault("papermill", {})["parameters"] = parameters
    nb.metadata[META] = {INTERACTIVE: True, "status": INTERACTIVE, "notebook": notebook,
                         "incident_id": str(parameters["incident_id"]), "prepared_at": iso_z(),
                         "provenance": provenance.of_run(source, parameters)}
    with open(target, "x", encoding="utf-8") as out:  # never over an existing file
        nbformat.write(nb, out)
    return target


def is_copy(path: str | Path) -> bool:
    """Whether `path` is a notebook prepared by `prepare` (not a headless record, not a runbook)."""
    try:
        nb = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return _copy_meta(nb) is not None


def _copy_meta(nb: Any) -> dict[str, Any] | None:
    meta = (nb.get("metadata") or {}).get(META) if isinstance(nb, dict) else None
    return meta if isinstance(meta, dict) and meta.get(INTERACTIVE) is True else None


def parameters_of(nb: dict[str, Any]) -> dict[str, Any]:
    """The copy's parameters: those it was prepared with, updated by its injected-parameters cell as edited."""
    found = dict(((nb.get("metadata") or {}).get("papermill") or {}).get("parameters") or {})
    for cell in nb.get("cells", []):
        if "injected-parameters" not in (cell.get("metadata") or {}).get("tags", []):
            continue
        source = cell.get("source") or ""
        try:
            body = ast.parse("".join(source) if isinstance(source, list) else source).body
        except SyntaxError:
            continue
        for node in body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return found


def redacted(value: Any, secrets: list[str]) -> Any:
    """A copy of a notebook (any JSON value) with every known secret value replaced by its marker."""
    if isinstance(value, str):
        return redact.redact_known(value, secrets)
    if isinstance(value, dict):
        return {k: redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, secrets) for v in value]
    return value


def _root() -> Path | None:
    root = os.environ.get(OUTPUTS_ENV)
    return Path(root).resolve() if root else None


def pre_save_hook(model: dict[str, Any], path: str, contents_manager: Any, **_: Any) -> None:
    """JupyterLab, before writing a copy: secret values out of it (the file on disk never holds one)."""
    root = _root()
    if root is None or model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    os_path = Path(contents_manager.root_dir, path.lstrip("/")).resolve()
    if not os_path.is_relative_to(root) or _copy_meta(model["content"]) is None:
        return
    secrets = list(secret_env_values(parameters_of(model["content"])).values())
    model["content"] = redacted(model["content"], secrets)


def post_save_hook(model: dict[str, Any], os_path: str, contents_manager: Any, **_: Any) -> None:
    """JupyterLab, after writing a copy: seal it (run.json, HTML, incident index; the next runbook)."""
    root = _root()
    if root is None or model.get("type") != "notebook":
        return
    sealed = seal(os_path, root)
    if sealed is not None:
        contents_manager.log.info("runbook: sealed %s (%s)", sealed["notebook_path"], sealed["status"])


def seal(path: str | Path, output_root: str | Path) -> dict[str, Any] | None:
    """Write the copy's record files from what is saved; None when `path` is not a copy inside the root.

    Returns the run.json written. Secret values are replaced in everything written here, and
    parameters holding one are not recorded (as for a refused headless run).
    """
    root, path = Path(output_root).resolve(), Path(path).resolve()
    if path.suffix != ".ipynb" or not path.is_relative_to(root) or path.parent == root or not path.is_file():
        return None
    nb = json.loads(path.read_text("utf-8"))
    meta = _copy_meta(nb)
    if meta is None:
        return None
    folder, name = path.parent, path.stem
    raw_parameters = parameters_of(nb)
    secrets = secret_env_values(raw_parameters)
    nb = redacted(nb, list(secrets.values()))
    parameters = {k: NOT_RECORDED if secret_held(v, secrets) is not None else v for k, v in raw_parameters.items()}
    records = read_records(nb)
    started = str(meta.get("prepared_at") or iso_z())
    began = parse_time(started)
    result = RunResult(name, INTERACTIVE, str(folder), str(path), None, started, iso_z(),
                       round(time.time() - began.timestamp(), 3) if began else 0.0,
                       str(parameters.get("incident_id") or meta.get("incident_id") or ""),
                       verdict=records.get("verdict") if isinstance(records.get("verdict"), dict) else None,
                       error=_first_error(nb), parameters=parameters,
                       provenance=meta.get("provenance") if isinstance(meta.get("provenance"), dict)
                       else provenance.of_run(None, parameters))
    result.html_path = str(_write_html(nb, folder / f"{name}.html", result))
    _write_json(folder / f"{name}.run.json", result.to_dict())
    _note_in_index(folder, result, records)
    _prepare_next(folder, result, raw_parameters, root)
    index_page.write(folder)
    return result.to_dict()


def _first_error(nb: dict[str, Any]) -> str | None:
    """The first error shown in the copy (`Name: message`), the way a headless record names it."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs") or []:
            if output.get("output_type") == "error":
                first = (str(output.get("evalue") or "").strip().splitlines() or [""])[0]
                return f"{output.get('ename')}: {first}"
    return None


def _write_html(nb: dict[str, Any], target: Path, result: RunResult) -> Path:
    """The HTML export for reviewers without Jupyter, opening with the record's banner."""
    _lean.import_jsonschema_without_iri_checkers()
    import nbformat
    from nbconvert import HTMLExporter

    node = nbformat.reads(json.dumps(nb), as_version=4)  # source and text as strings again
    banner = index_page.banner_markdown(
        incident_id=result.incident_id, notebook=result.notebook, status=result.status,
        started_at=result.started_at, finished_at=result.finished_at,
        operator=str(result.parameters.get("operator") or "") or None, provenance=result.provenance,
        error=result.error)
    node.cells.insert(0, nbformat.v4.new_markdown_cell(banner))
    body, _ = HTMLExporter().from_notebook_node(node)
    return write_replacing(target, body)


def _write_json(target: Path, value: dict[str, Any]) -> None:
    write_replacing(target, json.dumps(value, indent=2, default=str) + "\n")


def _note_in_index(folder: Path, result: RunResult, records: dict[str, Any]) -> None:
    """The copy's entry in incident.json (replacing its last one), the verdict, changes, severity."""
    verdict = result.verdict or {}
    entry = {"name": result.notebook, "status": result.status, "path": f"{result.notebook}.ipynb",
             "html": f"{result.notebook}.html", "verdict": verdict.get("line"), "error": result.error,
             "duration_s": result.duration_s}
    changes = [{"record": name, "runbook": result.notebook, "action": v.get("action"), "target": v.get("target"),
                "at": v.get("at"), "who": v.get("who"), "undo": v.get("undo"), "verified": v.get("verified"),
                "set": [{"field": d.get("field"), "before": d.get("before"), "after": d.get("after")}
                        for d in v.get("diff") or [] if isinstance(d, dict)]}
               for name, v in applied_changes(records).items()]
    with edit_index(folder) as index:
        notebooks = [n for n in index.get("notebooks") or [] if isinstance(n, dict)]
        at = next((i for i, n in enumerate(notebooks) if n.get("name") == result.notebook), None)
        if at is None:
            notebooks.append(entry)
        else:
            notebooks[at] = entry
        index["notebooks"] = notebooks
        kept = [c for c in index.get("changes_applied") or [] if c.get("runbook") != result.notebook]
        index["changes_applied"] = kept + changes
        index["finished_at"] = result.finished_at
        if index.get("status") in (None, "running", INTERACTIVE):
            index["status"] = INTERACTIVE
        if result.notebook == "triage" and verdict.get("line"):
            index.update(error_class=verdict.get("branch"), verdict=verdict.get("line"))
        elif result.notebook.startswith("diagnose_") and verdict.get("line"):
            index["diagnosis"] = verdict["line"]
    if result.notebook == "triage" and verdict.get("severity"):
        why = (records.get("severity") or {}).get("reason") if isinstance(records.get("severity"), dict) else None
        set_severity(folder, str(verdict["severity"]), by="triage", why=str(why or verdict.get("line")))


def _prepare_next(folder: Path, result: RunResult, parameters: dict[str, Any], root: Path) -> Path | None:
    """The runbook the verdict names, prepared in the same folder with the parameters it shares."""
    following = (result.verdict or {}).get("notebook")
    if not isinstance(following, str) or not following or following == result.notebook:
        return None
    if (folder / f"{following}.ipynb").exists():
        return folder / f"{following}.ipynb"
    try:
        accepted = declared_parameters(following) - set(RESERVED_PARAMETERS)
        carried = {k: v for k, v in parameters.items() if k in accepted}
        return prepare(following, carried, output_root=root, folder=folder).path
    except RunbookError:  # an edited parameter no longer valid: the verdict's command still works
        return None
