"""The papermill engine our runs use: nbclient's, saving the record once per code cell, compactly.

papermill's manager writes the whole output notebook (serialised and schema-validated) at the
start and at the end of every cell, markdown included: about 45 writes for a triage of 20 cells,
~0.25 s of a ~2 s run on a 2-core machine. Here a cell's start is written only for code cells,
and a cell's completion is left to the next code cell's start or to the final save at the end of
the notebook (which papermill always does, error or not). So the record on disk is never more
than the current code cell behind, which is all a crash of this process could lose anyway:
the kernel's own death or a timeout is handled by papermill's final save.

Each save during the run is the notebook as compact JSON (the C encoder; no schema validation),
written to a temporary file and renamed over the record: a reader never sees half a file. nbformat's
own writer (a deep copy, the schema validation, the pure-Python encoder its indentation needs) cost
~5 ms a save, CPU that ten incidents at once on two cores all wait for. The canonical, validated
form is written once, when the run's record is finalised (execute._finalise_notebook).

Registered in papermill's engine registry under `ENGINE_NAME` (its documented extension point);
raw `papermill` runs keep papermill's own engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

from ..paths import write_replacing

ENGINE_NAME = "runbook"


class CodeCellSaves(NotebookExecutionManager):
    """papermill's manager, writing the notebook when a code cell starts (and at the very end)."""

    _quiet = False

    def save(self, **kwargs: Any) -> None:
        if self._quiet:
            return
        if not self.output_path or "://" in str(self.output_path):  # papermill's I/O handlers (s3://, ...)
            super().save(**kwargs)
            return
        write_compact(self.nb, Path(self.output_path))
        self.last_save_time = self.now()

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        self._quiet = cell.get("cell_type") != "code"  # a markdown cell "runs" in no time
        try:
            super().cell_start(cell, cell_index, **kwargs)
        finally:
            self._quiet = False

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        self._quiet = True  # written by the next code cell's start, or by notebook_complete
        try:
            super().cell_complete(cell, cell_index, **kwargs)
        finally:
            self._quiet = False


def write_compact(nb: Any, path: Path) -> None:
    """`nb` as compact JSON, replacing `path` atomically; outputs' `transient` (display ids) dropped, as
    nbformat's writer drops them: what is on disk is a valid notebook at every moment."""
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("outputs") and any("transient" in o for o in cell["outputs"]):
            cell = {**cell, "outputs": [{k: v for k, v in o.items() if k != "transient"} for o in cell["outputs"]]}
        cells.append(cell)
    write_replacing(path, json.dumps({**nb, "cells": cells}, ensure_ascii=False))


class RunbookEngine(NBClientEngine):
    """`NBClientEngine` with `CodeCellSaves` (Engine.execute_notebook, with that one class changed)."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str | None, output_path: str | None = None,
                         progress_bar: bool = True, log_output: bool = False, autosave_cell_every: int = 30,
                         **kwargs: Any) -> Any:
        nb_man = CodeCellSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                               autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(ENGINE_NAME, RunbookEngine)
