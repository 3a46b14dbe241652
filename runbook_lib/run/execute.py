"""Headless runs: papermill executes a notebook into a new, never-overwritten record folder.

`outputs/<UTC timestamp>-<incident id>/<notebook>.ipynb` + `.html` + `.run.json`. The record is
kept whatever happens (bad parameter, failing cell, timeout, dead kernel) and its status says which.
The working directory of the kernel is the record folder, so a notebook writes nowhere else, and
the run's output root reaches the kernel as `$RUNBOOK_OUTPUTS`: a notebook defaulting to "the
newest incident" looks there only, never beside the installed package.

Bounds: papermill bounds each cell; `run_timeout_s` bounds the whole run (a watchdog kills the
kernel at the deadline and the run is recorded as timed_out). A request that cannot run at all
(unknown notebook, a secret's value passed as a parameter, a bad bound) is refused before any
kernel starts, and still leaves a `<notebook>.run.json` marked failed in a fresh record folder.

Which notebooks exist and what each declares is `catalog`'s; the whole-run deadline is
`watchdog.RunWatchdog`'s.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import KERNEL_NAME, bounds, params
from .._async import closing_thread_loop
from . import _lean, prepared as standby
from .._time import iso_z as _iso, utc_stamp
from ..errors import ParameterError, UnknownParameter
from ..paths import OUTPUTS_ENV
from ..records import index_page, provenance
from ..record import read_records
from ..secrets import check_no_secret_values, secret_env_values, secret_held
from .kernel import RunKernel, notebook_kernel_name
from .catalog import declared_parameters, resolve_notebook
from .catalog import available_notebooks  # noqa: F401  re-exported for callers
from .watchdog import RunWatchdog

DEFAULT_CELL_TIMEOUT_S = 300
DEFAULT_RUN_TIMEOUT_S = 900.0  # whole run, unless the notebook's own bounded wait needs longer
MAX_RUN_TIMEOUT_S = 6 * 3600.0
RUN_TIMEOUT_MARGIN_S = 300.0  # added to a notebook's own long wait (monitor_max_s) by the default
SUCCEEDED, FAILED, TIMED_OUT = "succeeded", "failed", "timed_out"


def default_run_timeout(parameters: dict[str, Any] | None = None) -> float:
    """900 s, or a notebook's own long bounded wait (`monitor_max_s`) plus a margin when longer."""
    wait = (parameters or {}).get("monitor_max_s")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and math.isfinite(wait) and wait > 0:
        return min(MAX_RUN_TIMEOUT_S, max(DEFAULT_RUN_TIMEOUT_S, float(wait) + RUN_TIMEOUT_MARGIN_S))
    return DEFAULT_RUN_TIMEOUT_S


# Set by `papermill --inject-output-path` in a raw papermill run; `runbook run` keeps drafts beside
# its record by running the kernel there, so a value given here could only steer files elsewhere.
RESERVED_PARAMETERS = {"PAPERMILL_OUTPUT_PATH": "nothing: `runbook` runs the kernel in the record folder, so "
                                               "drafts land beside the record; this parameter is for raw "
                                               "`papermill --inject-output-path` runs only"}


def check_run_timeout(value: object, name: str = "run_timeout_s") -> float:
    return params.timeout(name, value, maximum=MAX_RUN_TIMEOUT_S)


def check_run_request(name: str, parameters: dict[str, Any], *, strict_names: bool = False,
                      cell_timeout_s: object = DEFAULT_CELL_TIMEOUT_S, run_timeout_s: object = None,
                      flag_names: tuple[str, str] = ("cell_timeout_s", "run_timeout_s")) -> float:
    """Everything that must hold before a kernel starts; returns the whole-run bound in seconds.

    ParameterError (or UnknownParameter) names the first problem. `strict_names` (the CLI) refuses
    parameters the notebook does not declare instead of papermill's silent "unknown parameter".
    """
    resolve_notebook(name)
    if strict_names:
        declared = declared_parameters(name)
        unknown = sorted(set(parameters) - declared)
        if unknown:
            raise UnknownParameter(unknown[0], name, sorted(declared))
    check_no_secret_values(parameters)
    reserved = sorted(set(parameters) & set(RESERVED_PARAMETERS))
    if reserved:
        raise ParameterError(reserved[0], parameters[reserved[0]], RESERVED_PARAMETERS[reserved[0]])
    params.timeout(flag_names[0], cell_timeout_s, maximum=MAX_RUN_TIMEOUT_S)
    bound = check_run_timeout(default_run_timeout(parameters) if run_timeout_s is None else run_timeout_s,
                              flag_names[1])
    if WAIT_PARAMETER in declared_parameters(name):
        # The person's request (strict, the CLI) is held to its whole-run bound too; a caller's own
        # deadline (respond's remaining time) is met in the kernel, which shortens the watch and says so.
        check_wait_fits(parameters, float(cell_timeout_s),  # type: ignore[arg-type]
                        bound if strict_names and run_timeout_s is not None else None, flag_names, name)
    return bound


WAIT_PARAMETER = "monitor_max_s"  # a notebook's own long bounded wait (the 5xx recovery monitor)


def check_wait_fits(parameters: dict[str, Any], cell_timeout_s: float, run_timeout_s: float | None,
                    flag_names: tuple[str, str], notebook: str = "diagnose_server_error") -> None:
    """Refuse a bounded wait that could not end in a verdict before the cell or run bound, naming it.

    A wait that is not given is the notebook's default: the kernel shortens it to fit (`bounds`),
    so only the cell bound itself can be too small for it.
    """
    from .. import bounds

    probe = parameters.get("timeout_s")
    probe_s = float(probe) if isinstance(probe, (int, float)) and not isinstance(probe, bool) and probe > 0 else None
    room = bounds.wait_room(cell_timeout_s, probe_s)
    needed = f"the watch, its last probe (timeout_s) and the verdict must end inside one cell ({flag_names[0]})"
    if room < 1:
        raise ParameterError(flag_names[0], cell_timeout_s, (
            f"at least {cell_timeout_s - room + 1:g} s for {notebook}'s bounded recovery watch ({needed})"))
    wait = parameters.get(WAIT_PARAMETER)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait):
        return  # not given (the kernel fits the default) or not a number (the notebook's own check names it)
    if wait > room:
        raise ParameterError(WAIT_PARAMETER, wait, (
            f"at most {room:g} s with {flag_names[0]} {cell_timeout_s:g} and timeout_s "
            f"{probe_s or bounds.DEFAULT_PROBE_TIMEOUT_S:g} ({needed}); or a larger {flag_names[0]}"))
    if run_timeout_s is not None and wait + bounds.WAIT_MARGIN_S + (probe_s or bounds.DEFAULT_PROBE_TIMEOUT_S) \
            > run_timeout_s:
        raise ParameterError(WAIT_PARAMETER, wait, (
            f"less than {flag_names[1]} {run_timeout_s:g} minus {bounds.WAIT_MARGIN_S:g} s and timeout_s (the "
            f"watch must end, with its verdict, before the whole run's deadline); or a larger {flag_names[1]}"))


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
    run_timeout_s: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # which code and runbook made this record

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def verdict_line(self) -> str:
        if self.verdict and self.verdict.get("line"):
            return str(self.verdict["line"])
        return f"{self.status.upper()}: {self.error or 'no verdict recorded'}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_folder_id(incident_id: object) -> str:
    """The folder name part; an invalid id must not steer where the record lands."""
    try:
        return params.incident_id("incident_id", incident_id)
    except ParameterError:
        return "invalid-incident-id"


def new_record_dir(root: Path, incident_id: object, now: datetime | None = None,
                   before_mkdir: Callable[[Path], None] | None = None) -> Path:
    """Create a fresh folder; mkdir (not exist_ok) makes concurrent runs never share one.

    `before_mkdir(candidate)` runs before each attempt: `runbook serve` notes the folder durably
    first, so a crash in between is replayed into that folder rather than a second one.
    """
    root.mkdir(parents=True, exist_ok=True)
    base = f"{utc_stamp(now)}-{_safe_folder_id(incident_id)}"
    for n in range(1, 1000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        if before_mkdir is not None:
            if candidate.exists():
                continue
            before_mkdir(candidate)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a record folder under {root}")


def _outcome(exc: Exception) -> tuple[str, str]:
    """The status and error line a run that raised `exc` is recorded with."""
    if isinstance(exc, _lean.papermill().PapermillExecutionError):
        return FAILED, f"{exc.ename}: {_first_line(exc.evalue)}"
    status = TIMED_OUT if "Timeout" in type(exc).__name__ else FAILED
    error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    if "No such kernel" in str(exc):
        error += f" (register it with `make install`; notebooks use kernel {KERNEL_NAME!r})"
    elif type(exc).__name__ == "DeadKernelError" or "died" in str(exc):
        error = (f"{type(exc).__name__}: the kernel died (killed from outside, crashed or out of memory) "
                 "before the notebook finished; the partial record is kept")
    return status, error


def _early_kernel(manager_class: type, kernel_name: str, record_dir: Path) -> RunKernel | None:
    """The run's kernel, launched now; None when it cannot start (papermill then starts one itself,
    failing the same way, with the parameterised notebook written first, so the record says why)."""
    kernel = RunKernel(manager_class, kernel_name, Path(record_dir).resolve())
    try:
        kernel.start()
    except Exception:  # noqa: BLE001 - e.g. no such kernel: recorded through papermill's own attempt
        return None
    return kernel


def kernel_with_env(manager_class: type, env: dict[str, str]) -> type:
    """`manager_class` starting its kernel with `env` added to this process's environment.

    How the run's output root reaches the kernel (`$RUNBOOK_OUTPUTS`, read by `paths.outputs_dir`):
    given per kernel, never through os.environ, since runs in other threads have other roots.
    """

    class KernelWithEnv(manager_class):  # type: ignore[misc, valid-type]
        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**(kw.get("env") or os.environ), **env}
            await super().start_kernel(**kw)

    return KernelWithEnv


def run_notebook(name: str, parameters: dict[str, Any] | None = None, *, output_root: str | Path = "outputs",
                 cell_timeout_s: int = DEFAULT_CELL_TIMEOUT_S, progress: bool = True, html: bool = True,
                 kernel_name: str | None = None, record_dir: Path | None = None,
                 run_timeout_s: float | None = None,
                 on_verdict: Callable[[RunResult], None] | None = None) -> RunResult:
    """Execute notebook `name` with `parameters` into a new record folder and describe the outcome.

    `record_dir` lets a caller that must place files beside the record first (the demo's
    kubeconfig) pass a folder it made with `new_record_dir`. `run_timeout_s` bounds the whole run
    (default: `default_run_timeout(parameters)`, 900 s): at the deadline the kernel is killed and
    the run is recorded as timed_out, with the partial notebook kept. A request that cannot run
    (see `check_run_request`) returns a failed result recorded in `<notebook>.run.json` only.
    `on_verdict(result)` is called once the executed notebook is final and its verdict read, before
    the HTML and `run.json` are written (the caller records the verdict where people look first).
    """
    parameters = dict(parameters or {})
    if "incident_id" not in parameters:  # into an incident's folder: its id, else a fresh one
        from ..records.incident import read_index

        known = str((read_index(record_dir) or {}).get("id") or "") if record_dir else ""
        parameters["incident_id"] = _safe_folder_id(known) if known else params.default_incident_id()
    incident_id = parameters["incident_id"]
    try:
        bound = check_run_request(name, parameters, cell_timeout_s=cell_timeout_s, run_timeout_s=run_timeout_s)
    except ParameterError as exc:
        return record_rejected_run(name, parameters, exc, output_root=output_root, record_dir=record_dir)
    source = resolve_notebook(name)
    record_dir = record_dir or new_record_dir(Path(output_root), incident_id)
    out_nb = record_dir / f"{name}.ipynb"
    started, t0 = datetime.now(UTC), time.perf_counter()
    status, error = SUCCEEDED, None
    kernel_env = {OUTPUTS_ENV: str(Path(output_root).resolve()),
                  # the bounds, so a runbook's own wait ends (with its verdict) inside them
                  bounds.CELL_TIMEOUT_ENV: f"{float(cell_timeout_s):g}",
                  bounds.RUN_DEADLINE_ENV: f"{time.time() + bound:.3f}"}
    # `runbook serve --warm`: a kernel this process started before the incident came (run/standby.py),
    # moved into the record folder with this env; else (or when it died meanwhile) a cold one below
    prepared = standby.claim(notebook_kernel_name(source, kernel_name))
    kernel = prepared.bind(record_dir, kernel_env, bound) if prepared is not None else None
    watchdog = prepared.watchdog if kernel is not None and prepared is not None else RunWatchdog(bound)
    manager_class = kernel_with_env(watchdog.kernel_manager_class(), kernel_env)
    warm: HtmlWarmup | None = prepared.html if kernel is not None and prepared is not None and html else None
    try:
        with closing_thread_loop():
            # The kernel boots (~0.7 s) while papermill loads and parameterises the notebook; its
            # cwd is the record folder (never papermill's `cwd`, which chdirs this whole process).
            kernel = kernel or _early_kernel(manager_class, notebook_kernel_name(source, kernel_name), record_dir)
            try:
                pm = _lean.papermill()  # without jsonschema's iri checkers: ~1.7 s (see run/_lean.py)
                from .engine import ENGINE_NAME  # papermill's nbclient engine, one write per code cell

                if html and warm is None:
                    warm = HtmlWarmup()  # nbconvert and its templates, while the kernel works
                pm.execute_notebook(str(source), str(out_nb), parameters=parameters, kernel_name=kernel_name,
                                    progress_bar=progress, execution_timeout=cell_timeout_s, log_output=False,
                                    request_save_on_cell_execute=True, engine_name=ENGINE_NAME,
                                    km=kernel.km if kernel else None, kernel_manager_class=manager_class,
                                    resources={"metadata": {"path": str(Path(record_dir).resolve())}})
            finally:
                if kernel is not None:
                    kernel.stop()
    except Exception as exc:  # noqa: BLE001 - a failing cell, kernel death, timeout, missing kernel: recorded
        status, error = _outcome(exc)
    finally:
        watchdog.stop()
    if watchdog.fired:
        status = TIMED_OUT
        error = (f"RunTimeout: the whole run exceeded its {bound:g} s deadline (run_timeout_s / --run-timeout); "
                 "the kernel was killed and the partial record is kept")
    finished = datetime.now(UTC)
    result = RunResult(name, status, str(record_dir), str(out_nb), None, _iso(started), _iso(finished),
                       round(time.perf_counter() - t0, 3), str(incident_id), error=error,
                       parameters=parameters, run_timeout_s=bound,
                       provenance=provenance.of_run(source, parameters))
    return _seal(result, Path(record_dir), out_nb, warm if html else None, html, on_verdict)


def _seal(result: RunResult, record_dir: Path, out_nb: Path, warm: HtmlWarmup | None, html: bool,
          on_verdict: Callable[[RunResult], None] | None) -> RunResult:
    """The record after the kernel: the notebook finalised, the verdict handed on, HTML, run.json, index page."""
    if out_nb.exists():
        result.verdict = _finalise_notebook(out_nb, result)
        if on_verdict is not None:  # e.g. respond: the verdict into incident.json before the HTML is rendered
            on_verdict(result)
        if html:
            result.html_path = str(_write_html(out_nb, warm))
    (record_dir / f"{result.notebook}.run.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    index_page.write(record_dir)  # the folder's entry point, rewritten after every run
    return result


BANNER_TAG = "runbook-banner"  # the first cell of every executed record (index_page.banner_markdown)
_NOTEBOOK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def record_rejected_run(name: object, parameters: dict[str, Any], error: Exception, *,
                        output_root: str | Path = "outputs", record_dir: Path | None = None) -> RunResult:
    """A run refused before any kernel started: a fresh record folder with `<notebook>.run.json` (failed).

    The folder name comes from a valid incident id only; the file name from a plain notebook name
    only (else `invalid-notebook`), so nothing in the request can steer where the record lands.
    Values of parameters the notebook does not declare, or that hold a secret, are not recorded.
    """
    parameters = dict(parameters or {})
    incident_id = parameters.get("incident_id", params.default_incident_id())
    record_dir = record_dir or new_record_dir(Path(output_root), incident_id)
    stem = name if isinstance(name, str) and _NOTEBOOK_NAME.match(name) else "invalid-notebook"
    try:
        declared = declared_parameters(str(name))
    except ParameterError:
        declared = set()
    secrets = secret_env_values(parameters)
    safe: dict[str, Any] = {}
    for key, value in parameters.items():
        if key not in declared:
            safe[key] = "<not recorded: not a parameter of this notebook>"
        elif secret_held(value, secrets) is not None:
            safe[key] = "<not recorded: holds a secret's value>"
        else:
            safe[key] = value
    now = _iso(datetime.now(UTC))
    message = f"{type(error).__name__}: {error}" if not isinstance(error, ParameterError) else str(error)
    result = RunResult(stem, FAILED, str(record_dir), "", None, now, now, 0.0,
                       _safe_folder_id(incident_id), error=f"rejected before the run started: {message}",
                       parameters=safe, provenance=provenance.of_run(None, safe))
    (record_dir / f"{stem}.run.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    index_page.write(record_dir)
    return result


def _finalise_notebook(path: Path, result: RunResult) -> dict[str, Any] | None:
    """Stamp status into the notebook's metadata so the record says by itself how it ended.

    When the run ended without a cell error (dead kernel, cell or run timeout), papermill marks every
    cell "completed"; here the interrupted cell is marked failed with the error as its output and
    the cells that never ran go back to "pending".
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    verdict = read_records(nb).get("verdict")
    pm_meta = nb.metadata.setdefault("papermill", {})
    if result.status != SUCCEEDED and not pm_meta.get("exception"):
        _mark_interrupted(nb, result)
    nb.metadata["runbook"] = {"status": result.status, "error": result.error, "incident_id": result.incident_id,
                              "notebook": result.notebook, "started_at": result.started_at,
                              "finished_at": result.finished_at, "verdict": verdict,
                              "provenance": result.provenance}
    banner = nbformat.v4.new_markdown_cell(index_page.banner_markdown(
        incident_id=result.incident_id, notebook=result.notebook, status=result.status,
        started_at=result.started_at, finished_at=result.finished_at,
        operator=str(result.parameters.get("operator") or "") or None, provenance=result.provenance,
        error=result.error), metadata={"tags": [BANNER_TAG]})
    nb.cells.insert(0, banner)
    nbformat.write(nb, path)
    return verdict


def _mark_interrupted(nb: Any, result: RunResult) -> None:
    import nbformat

    started = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return
    last = started[-1]
    cell = nb.cells[last]
    ename, _, evalue = (result.error or "interrupted").partition(": ")
    cell.metadata.papermill.update(status="failed", exception=True)
    if cell.cell_type == "code":
        cell.outputs.append(nbformat.v4.new_output("error", ename=ename or "Interrupted", evalue=evalue,
                                                   traceback=[result.error or "interrupted"]))
    for later in nb.cells[last + 1:]:
        if "papermill" in later.get("metadata", {}):
            later.metadata.papermill.update(status="pending", start_time=None, end_time=None, duration=None)
    nb.metadata.papermill["exception"] = True
    where = f"cell {last}" + (f" (`{_first_line(''.join(cell.source))[:60]}`)" if cell.source else "")
    result.error = f"{result.error} [interrupted in {where}]" if result.error else f"interrupted in {where}"


class HtmlWarmup:
    """An HTML exporter made ready in a background thread while the kernel runs the notebook.

    Why: importing nbconvert and compiling its templates costs ~0.6 s on a 2-core machine, all of
    it after the verdict when done at the end; during the run the main thread only waits on the
    kernel. `exporter()` waits for it (bounded) and falls back to a fresh exporter.
    """

    def __init__(self) -> None:
        self._exporter: Any = None
        self._thread = threading.Thread(target=self._warm, name="html-warmup", daemon=True)
        self._thread.start()

    def _warm(self) -> None:
        try:
            nbformat = _lean.nbformat()
            from nbconvert import HTMLExporter

            exporter = HTMLExporter()
            exporter.from_notebook_node(nbformat.v4.new_notebook(cells=[
                nbformat.v4.new_markdown_cell("warm-up"), nbformat.v4.new_code_cell("")]))
            self._exporter = exporter
        except Exception:  # noqa: BLE001 - only a speed-up: the record is rendered afresh instead
            self._exporter = None

    def exporter(self, timeout_s: float = 60.0) -> Any:
        self._thread.join(timeout_s)
        if self._exporter is not None and not self._thread.is_alive():
            return self._exporter
        from nbconvert import HTMLExporter

        return HTMLExporter()


def _write_html(path: Path, warm: HtmlWarmup | None = None) -> Path:
    """The record's HTML beside it (the exporter warmed during the run when given)."""
    if warm is None:
        from nbconvert import HTMLExporter

        exporter = HTMLExporter()
    else:
        exporter = warm.exporter()
    body, _ = exporter.from_filename(str(path))
    out = path.with_suffix(".html")
    out.write_text(body, "utf-8")
    return out


def _first_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text or "").strip()
    return text.splitlines()[0] if text else ""


