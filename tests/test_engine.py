"""The run engine writes fewer times, and the record it leaves is papermill's, partial states included.

run/engine.py skips papermill's writes for markdown cells and at each cell's completion. What an
operator or a crash can see must not suffer: during a long code cell the file on disk shows the
earlier cells complete with their outputs and that cell running; the final notebook is the same
as papermill's own engine leaves (timestamps aside).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from runbook_lib import KERNEL_NAME

pytestmark = pytest.mark.notebook


def _notebook(path: Path, marker: Path) -> Path:
    from runbook_lib.run import _lean

    nbformat = _lean.nbformat()
    wait = f"import pathlib, time\nwhile not pathlib.Path({marker.name!r}).exists():\n    time.sleep(0.05)\nprint('late')"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("print('early')"),
        nbformat.v4.new_markdown_cell("between"),
        nbformat.v4.new_code_cell(wait),
        nbformat.v4.new_markdown_cell("end"),
    ])
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_NAME, "language": "python"}
    nbformat.write(nb, path)
    return path


def _shape(nb: dict) -> list:
    """What a reader sees, timestamps and durations left out."""
    return [(c["cell_type"], "".join(c["source"]), c["metadata"]["papermill"]["status"],
             ["".join(o.get("text") or "") for o in c.get("outputs", [])]) for c in nb["cells"]]


def test_partial_record_during_a_long_cell_and_same_final_record(tmp_path):
    from runbook_lib.run import _lean
    from runbook_lib.run.engine import ENGINE_NAME

    pm = _lean.papermill()
    results, raws = {}, {}
    for engine in (ENGINE_NAME, None):
        marker = tmp_path / (engine or "papermill") / "go"
        marker.parent.mkdir()
        src = _notebook(tmp_path / f"in-{engine}.ipynb", marker)
        out = tmp_path / f"out-{engine}.ipynb"
        seen: dict = {}

        def watch(out=out, marker=marker, seen=seen) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    raw = out.read_text()
                    nb = json.loads(raw)
                    if nb["cells"][3]["metadata"]["papermill"]["status"] == "running":
                        seen["during"] = _shape(nb)
                        seen["raw"] = raw
                        break
                except (OSError, ValueError, KeyError, IndexError):
                    pass
                time.sleep(0.05)
            marker.touch()  # let the long cell finish either way

        watcher = threading.Thread(target=watch)
        watcher.start()
        pm.execute_notebook(str(src), str(out), kernel_name=KERNEL_NAME, progress_bar=False,
                            engine_name=engine, execution_timeout=60, cwd=str(marker.parent))
        watcher.join(70)
        results[engine] = (seen.get("during"), _shape(json.loads(out.read_text())))
        raws[engine] = (seen.get("raw"), out.read_text())
    during, final = results[ENGINE_NAME]
    assert during is not None, "the record on disk never showed the long cell running"
    assert during[1][2] == "completed" and during[1][3] == ["early\n"]  # the earlier cell, with its output
    assert during[3][2] == "running" and during[4][2] == "pending"
    assert final == results[None][1], "the final record differs from papermill's own engine's"
    assert final[3][2] == "completed" and final[3][3] == ["late\n"]
    # the compact saves (engine.write_compact) are valid notebooks at every moment, partial and final
    nbformat = _lean.nbformat()
    for raw in raws[ENGINE_NAME]:
        assert raw is not None
        nbformat.validate(nbformat.reads(raw, as_version=4))
    assert list(tmp_path.glob(".*.tmp")) == []  # no temporary file left beside the record
