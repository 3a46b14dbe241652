"""Where the runbooks and the records live: one answer for the CLI, the notebooks and serve.

`$RUNBOOK_NOTEBOOKS` / `$RUNBOOK_OUTPUTS` win; otherwise `./notebooks` / `./outputs` when they
exist in the working directory; otherwise the repository's folders beside the package, so a
notebook opened from `notebooks/` finds the same places.

The records' root is never guessed from where the package is installed for a run started
elsewhere: `run.execute.run_notebook` hands the run's output root to its kernel as
`$RUNBOOK_OUTPUTS`, and outside that hand-off the repository's `outputs/` is used only from a
working directory inside that repository (a second checkout sharing this install, or any other
directory, gets its own `./outputs`, and a clear error when nothing is there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NOTEBOOKS_ENV = "RUNBOOK_NOTEBOOKS"
OUTPUTS_ENV = "RUNBOOK_OUTPUTS"


def project_dir(env_var: str, name: str) -> Path:
    """`$env_var`, else ./name, else the repository's name/ beside the package: found from any cwd."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    local = Path.cwd() / name
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / name


def notebooks_dir() -> Path:
    """The runbook notebooks: `$RUNBOOK_NOTEBOOKS`, ./notebooks, or the repository's."""
    return project_dir(NOTEBOOKS_ENV, "notebooks")


def outputs_dir() -> Path:
    """The records' root as a notebook's kernel sees it (where "the newest incident" is looked for).

    `$RUNBOOK_OUTPUTS` (set by `runbook run/respond/...` to the run's own output root), else
    ./outputs when it exists, else the repository's outputs/ only when the working directory is
    inside the repository (JupyterLab opens notebooks in notebooks/), else ./outputs (which may not
    exist: the caller then says so), so a run never reaches into another checkout's records.
    """
    env = os.environ.get(OUTPUTS_ENV)
    if env:
        return Path(env)
    local = Path.cwd() / "outputs"
    repo = Path(__file__).resolve().parent.parent
    if not local.is_dir() and Path.cwd().resolve().is_relative_to(repo):
        return repo / "outputs"
    return local


def default_output_root() -> str:
    """The CLI's `--output-dir` default: `$RUNBOOK_OUTPUTS` when set (as the notebooks honour it), else outputs."""
    return os.environ.get(OUTPUTS_ENV) or "outputs"


_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def is_url(root: object) -> bool:
    """An object-storage URL (`s3://...`, `gs://...`); `file://` and plain paths are local."""
    m = _URL.match(root) if isinstance(root, str) else None
    return bool(m) and m.group(1) != "file"


def write_replacing(path: Path, text: str) -> Path:
    """`text` into `path` through a temporary file beside it and a rename: a reader (another process,
    the archive, JupyterLab) sees the old file or the new one, never half of one; nothing is left behind."""
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
