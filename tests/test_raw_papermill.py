"""Plain `papermill` (the real CLI from .venv/bin), the way the README documents it: the record stays safe.

- a parameter holding the API key fails the first cell, naming the parameter and never the value;
  no 8-character piece of the key is in any file written, beyond what papermill itself writes
  before the kernel starts (the injected-parameters cell and `metadata.papermill.parameters`);
- with `--inject-output-path` the message drafts land beside the output notebook (not in the
  caller's directory, not in notebooks/);
- the 5xx runbook tells people before it monitors: read from the executed record's cell order,
  the papermill cell times and the drafts' timestamps against the monitor's first probe.

Two notebook runs in all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.record import iter_records, read_records

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = Path(sys.executable).parent / "papermill"
RUNBOOK = ROOT / "notebooks" / "diagnose_server_error.ipynb"
INJECTED = "injected-parameters"


def _papermill(output: str, cwd: Path, *parameters: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PAPERMILL), str(RUNBOOK), output, "--inject-output-path", "--no-progress-bar",
                           *parameters], capture_output=True, text=True, timeout=180, cwd=cwd)


def _stack_parameters(st: Any, **extra: object) -> list[str]:
    values = {"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
              "status_feed_url": f"{st.mistral_url}/feed.rss", "kubeconfig": st.kubeconfig["ok"],
              "prometheus_url": "", "timeout_s": "2", "probe_samples": "2", **extra}
    return [arg for name, value in values.items() for arg in ("-p", name, str(value))]


def _tracked_notebooks() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (ROOT / "notebooks").iterdir()}


def _pieces(key: str) -> set[str]:
    return {key[i:i + 8] for i in range(len(key) - 7)}


def _without_papermills_own_injection(nb: dict[str, Any]) -> str:
    """The notebook minus what papermill writes before the kernel starts: every parameter, in clear."""
    nb = json.loads(json.dumps(nb))
    nb["cells"] = [c for c in nb["cells"] if INJECTED not in c.get("metadata", {}).get("tags", [])]
    nb["metadata"]["papermill"].pop("parameters")
    return json.dumps(nb)


def test_a_parameter_holding_the_key_fails_the_first_cell_and_no_piece_of_it_lands(cluster_stack, api_key,
                                                                                    tmp_path):
    cwd, out_dir = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    out_dir.mkdir()
    tracked = _tracked_notebooks()
    proc = _papermill(str(out_dir / "diagnose_server_error.ipynb"), cwd,
                      *_stack_parameters(cluster_stack, operator=api_key))
    assert proc.returncode == 1, proc.stderr[-2000:]
    out = out_dir / "diagnose_server_error.ipynb"
    nb = json.loads(out.read_text("utf-8"))
    assert nb["metadata"]["papermill"]["exception"] is True  # the record says it failed
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    ran = [c for c in code if c["metadata"]["papermill"]["status"] != "pending"]
    failed = [c for c in ran if c["metadata"]["papermill"]["status"] == "failed"]
    assert len(failed) == 1 and "se.start(" in "".join(failed[0]["source"])  # the first call of the runbook
    assert ran[-1] is failed[0]  # nothing after it ran: no probe, no record, no draft
    (error,) = [o for o in failed[0]["outputs"] if o["output_type"] == "error"]
    assert error["ename"] == "ParameterError"
    assert "'operator'" in error["evalue"] and "$MISTRAL_API_KEY" in error["evalue"]
    assert iter_records(nb) == []
    # papermill itself wrote the key before the kernel started (this is why keys are never parameters) ...
    injected = [c for c in code if INJECTED in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and api_key in "".join(injected[0]["source"])
    # ... and nothing else holds any 8-character piece of it: the rest of the notebook, any other file
    # written (none beside it, none in the caller's directory), what papermill printed
    leaked = {"output notebook": _without_papermills_own_injection(nb), "stdout": proc.stdout,
              "stderr": proc.stderr}
    others = [p for folder in (cwd, out_dir) for p in folder.rglob("*") if p != out]
    assert others == [] and _tracked_notebooks() == tracked
    for where, text in leaked.items():
        assert not [p for p in _pieces(api_key) if p in text], f"a piece of the key is in the {where}"


def test_drafts_land_beside_the_output_and_people_are_told_before_the_monitor(cluster_stack, api_key, tmp_path):
    st = cluster_stack
    st.set_mode("server_error", status=503)
    cwd, out_dir = tmp_path / "cwd", tmp_path / "records"
    cwd.mkdir()
    out_dir.mkdir()
    tracked = _tracked_notebooks()
    proc = _papermill("../records/diagnose_server_error.ipynb", cwd,  # relative to the caller, as typed
                      *_stack_parameters(st, monitor_interval_s="0.2", monitor_max_s="1.5", healthy_needed="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = out_dir / "diagnose_server_error.ipynb"
    rec = read_records(out)
    comms, monitor = rec["communications"], rec["recovery_monitor"]

    # drafts beside the output notebook; none in the caller's directory or in notebooks/
    assert sorted(p.name for p in cwd.iterdir()) == [] and _tracked_notebooks() == tracked
    drafts = sorted(p.name for p in out_dir.glob("message-*.md"))
    assert len(comms["files"]) == 2 and set(comms["files"]) < set(drafts)
    assert {"message-internal-slack.md", "message-external-statuspage.md"} < set(drafts)
    assert comms["saved"] == "beside the output notebook (`PAPERMILL_OUTPUT_PATH`)"
    assert (out_dir / "message-internal-slack.md").read_text("utf-8") == comms["internal"] + "\n"

    # the order the record shows: tell people, then (last of the steps) the bounded monitor
    nb = json.loads(out.read_text("utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and INJECTED not in c["metadata"].get("tags", [])]
    calls = ["".join(c["source"]).strip() for c in code]
    told, watched = calls.index("run.communicate();"), calls.index("run.monitor_recovery();")
    assert told < watched and calls[watched + 1:] == ["run.summary();"]
    assert code[told]["metadata"]["papermill"]["end_time"] <= code[watched]["metadata"]["papermill"]["start_time"]
    names = [r["name"] for r in iter_records(nb)]
    assert names.index("communications") < names.index("recovery_monitor")
    # and the times it happened at: the drafts were written before the monitor's first probe was sent
    first_probe = datetime.fromisoformat(monitor["samples"][0]["at"])
    assert datetime.fromisoformat(comms["at"]) <= first_probe
    for name in comms["files"]:
        assert (out_dir / name).stat().st_mtime <= first_probe.timestamp()
    assert monitor["stopped_because"] == "max_duration_reached" and monitor["duration_s"] >= 1.5
    assert "monitoring for recovery (up to 1.5 s)" in comms["internal"]
    # the key was never a parameter here: no piece of it in anything written
    for path in out_dir.iterdir():
        text = path.read_text("utf-8")
        assert not [p for p in _pieces(api_key) if p in text], path.name
