"""Where the runbooks and the records live: one answer for the CLI, the notebooks and serve.

`$RUNBOOK_NOTEBOOKS` / `$RUNBOOK_OUTPUTS` win; otherwise `./notebooks` / `./outputs` when they
exist in the working directory; otherwise the repository's folders beside the package, so a
notebook opened from `notebooks/` or run headless from a record folder finds the same places.
"""

from __future__ import annotations

import os
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
    """The records' root as the notebooks see it: `$RUNBOOK_OUTPUTS`, ./outputs, or the repository's."""
    return project_dir(OUTPUTS_ENV, "outputs")


def default_output_root() -> str:
    """The CLI's `--output-dir` default: `$RUNBOOK_OUTPUTS` when set (as the notebooks honour it), else outputs."""
    return os.environ.get(OUTPUTS_ENV) or "outputs"
