"""mistral-runbooks helper package: all logic behind the incident notebooks.

Kept import-light on purpose (`import runbook_lib` must stay well under 150 ms): heavy libraries
(kubernetes, pandas, matplotlib, papermill) are imported inside the functions that need them.
"""

from __future__ import annotations

from .errors import NotebookFailed, ParameterError, RunbookError, SourceUnavailable

__version__ = "0.1.0"
KERNEL_NAME = "mistral-runbooks"

__all__ = [
    "KERNEL_NAME",
    "NotebookFailed",
    "ParameterError",
    "RunbookError",
    "SourceUnavailable",
    "__version__",
]
