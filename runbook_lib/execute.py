"""Headless runs: papermill executes a notebook into a new, never-overwritten record folder.

`outputs/<UTC timestamp>-<incident id>/<notebook>.ipynb` + `.html` + `.run.json`. The record is
kept whatever happens (bad parameter, failing cell, timeout) and its status says which. The
working directory of the kernel is the record folder, so a notebook writes nowhere else.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import KERNEL_NAME, params
from .errors import ParameterError
from .record import read_records

DEFAULT_CELL_TIMEOUT_S = 300
SUCCEEDED, FAILED, TIMED_OUT = "succeeded", "failed", "timed_out"


def notebooks_dir() -> Path:
    """`$RUNBOOK_NOTEBOOKS`, else ./notebooks, else the repository's notebooks/ beside the package."""
    return project_dir("RUNBOOK_NOTEBOOKS", "notebooks")


def project_dir(env_var: str, name: str) -> Path:
    """`$env_var`, else ./name, else the repository's name/ beside the package: found from any cwd."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    local = Path.cwd() / name
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / name


def available_notebooks() -> list[str]:
    return sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))


def resolve_notebook(name: str) -> Path:
    names = available_notebooks()
    if not isinstance(name, str) or name not in names:
        raise ParameterError("notebook", name, "one of " + (", ".join(names) or "(no notebooks found)"))
    return notebooks_dir() / f"{name}.ipynb"


_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")


def declared_parameters(name: str) -> set[str]:
    """Names assigned in the notebook's `parameters` cell (what it accepts)."""
    nb = json.loads(resolve_notebook(name).read_text("utf-8"))
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return {m.group(1) for line in source.splitlines() if (m := _ASSIGN.match(line))}
    return set()


@dataclass
class RunResult:
    notebook: str
    status: str
    record_dir: str
    notebook_path: str
    html_path: str | None
    started_at: str
    finished_at: str
    duration_s: float
    incident_id: str
    verdict: dict[str, Any] | None = None
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def verdict_line(self) -> str:
        if self.verdict and self.verdict.get("line"):
            return str(self.verdict["line"])
        return f"{self.status.upper()}: {self.error or 'no verdict recorded'}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def _safe_folder_id(incident_id: object) -> str:
    """The folder name part; an invalid id must not steer where the record lands."""
    try:
        return params.incident_id("incident_id", incident_id)
    except ParameterError:
        return "invalid-incident-id"


def new_record_dir(root: Path, incident_id: object, now: datetime | None = None) -> Path:
    """Create a fresh folder; mkdir (not exist_ok) makes concurrent runs never share one."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{utc_stamp(now)}-{_safe_folder_id(incident_id)}"
    for n in range(1, 1000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a record folder under {root}")


def run_notebook(name: str, parameters: dict[str, Any] | None = None, *, output_root: str | Path = "outputs",
                 cell_timeout_s: int = DEFAULT_CELL_TIMEOUT_S, progress: bool = True, html: bool = True,
                 kernel_name: str | None = None, record_dir: Path | None = None) -> RunResult:
    """Execute notebook `name` with `parameters` into a new record folder and describe the outcome.

    `record_dir` lets a caller that must place files beside the record first (the demo's
    kubeconfig) pass a folder it made with `new_record_dir`.
    """
    import papermill as pm

    source = resolve_notebook(name)
    parameters = dict(parameters or {})
    if "incident_id" not in parameters:  # into an incident's folder: its id, else a fresh one
        from .incident import read_index

        known = str((read_index(record_dir) or {}).get("id") or "") if record_dir else ""
        parameters["incident_id"] = _safe_folder_id(known) if known else f"INC-{utc_stamp()}"
    incident_id = parameters["incident_id"]
    record_dir = record_dir or new_record_dir(Path(output_root), incident_id)
    out_nb = record_dir / f"{name}.ipynb"
    started, t0 = datetime.now(UTC), time.perf_counter()
    status, error = SUCCEEDED, None
    try:
        pm.execute_notebook(str(source), str(out_nb), parameters=parameters, kernel_name=kernel_name,
                            progress_bar=progress, cwd=str(record_dir), execution_timeout=cell_timeout_s,
                            log_output=False, request_save_on_cell_execute=True)
    except pm.PapermillExecutionError as exc:
        status, error = FAILED, f"{exc.ename}: {_first_line(exc.evalue)}"
    except Exception as exc:  # noqa: BLE001 - kernel death, cell timeout, missing kernel: all recorded
        status = TIMED_OUT if "Timeout" in type(exc).__name__ else FAILED
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
        if "No such kernel" in str(exc):
            error += f" (register it with `make install`; notebooks use kernel {KERNEL_NAME!r})"
    finished = datetime.now(UTC)
    result = RunResult(name, status, str(record_dir), str(out_nb), None, _iso(started), _iso(finished),
                       round(time.perf_counter() - t0, 3), str(incident_id), error=error,
                       parameters=parameters)
    if out_nb.exists():
        result.verdict = _finalise_notebook(out_nb, result)
        if html:
            result.html_path = str(_write_html(out_nb))
    (record_dir / f"{name}.run.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    return result


def _finalise_notebook(path: Path, result: RunResult) -> dict[str, Any] | None:
    """Stamp status into the notebook's metadata so the record says by itself how it ended."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    verdict = read_records(nb).get("verdict")
    nb.metadata["runbook"] = {"status": result.status, "error": result.error, "incident_id": result.incident_id,
                              "notebook": result.notebook, "started_at": result.started_at,
                              "finished_at": result.finished_at, "verdict": verdict}
    nbformat.write(nb, path)
    return verdict


def _write_html(path: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(path))
    out = path.with_suffix(".html")
    out.write_text(body, "utf-8")
    return out


def _first_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text or "").strip()
    return text.splitlines()[0] if text else ""


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")
