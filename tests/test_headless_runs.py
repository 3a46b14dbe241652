"""The CLI and plain papermill: records, exit codes, failed-parameter records, no key leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.run import catalog, execute
from runbook_lib.errors import ParameterError
from runbook_lib.record import read_records

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_record_dirs_never_overwrite(tmp_path):
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    a = execute.new_record_dir(tmp_path, "INC-1", now)
    b = execute.new_record_dir(tmp_path, "INC-1", now)
    assert a != b and a.name == "20261123T100000Z-INC-1" and b.name.endswith("-2")


def test_invalid_incident_id_cannot_steer_the_folder(tmp_path):
    d = execute.new_record_dir(tmp_path / "out", "../../etc")
    assert d.parent == tmp_path / "out" and d.name.endswith("invalid-incident-id")


def test_unknown_notebook_lists_accepted_names():
    with pytest.raises(ParameterError, match="'notebook'.*triage"):
        catalog.resolve_notebook("nope")


@pytest.mark.parametrize("name", catalog.available_notebooks())
def test_papermill_reads_every_declared_parameter(name, caplog):
    """`papermill --help-notebook` and papermill's recorded defaults see every parameter, with no
    "Unable to parse line" warning (papermill skips any line holding a second '=')."""
    import nbformat
    from papermill.translators import PythonTranslator

    nb = nbformat.read(catalog.resolve_notebook(name), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level("WARNING", logger="papermill"):
        seen = {p.name for p in PythonTranslator.inspect(cell)}
    assert not [r.message for r in caplog.records if "Unable to parse" in r.message]
    assert seen == catalog.declared_parameters(name)


@pytest.mark.notebook
def test_cli_run_prints_verdict_and_paths(stack, tmp_path):
    stack.set_mode("rate_limited")
    assert stack.wait_for_service_status({"down"}, timeout_s=10)
    out = subprocess.run(
        [str(BIN / "runbook"), "run", "triage", "-q", "--output-dir", str(tmp_path / "o"), "--incident-id", "INC-7",
         "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
         "-p", "prometheus_url", "", "-p", "timeout_s", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "P1 rate limited -> diagnose_rate_limit"  # every call of our service refused: P1
    nb = Path(lines[1].split(": ", 1)[1].strip())
    assert nb.exists() and nb.parent.name.endswith("-INC-7") and nb.with_suffix(".html").exists()


@pytest.mark.notebook
@pytest.mark.parametrize("name,value,fragment", [
    ("timeout_s", "-1", "seconds > 0"),
    ("mistral_url", "not a url", "absolute URL"),
    ("namespace", "Bad_NS", "DNS-1123"),
    ("incident_id", "../../escape", "'incident_id'"),
])
def test_bad_parameter_fails_first_cell_and_keeps_failed_record(tmp_path, name, value, fragment):
    out = subprocess.run([str(BIN / "runbook"), "run", "triage", "-q", "--output-dir", str(tmp_path / "o"),
                          "-p", name, value], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 1
    assert f"'{name}'" in out.stdout and fragment in out.stdout
    folders = list((tmp_path / "o").iterdir())
    assert len(folders) == 1 and not any(p for p in tmp_path.iterdir() if p.name != "o")
    nb = json.loads((folders[0] / "triage.ipynb").read_text())
    assert nb["metadata"]["runbook"]["status"] == "failed"
    assert nb["metadata"]["papermill"]["exception"] is True
    statuses = [c["metadata"].get("papermill", {}).get("status") for c in nb["cells"] if c["cell_type"] == "code"]
    # cells: [injected-parameters?] parameters, injected, validation -> the validation cell is the failing one
    first_failed = statuses.index("failed")
    failing_src = "".join([c for c in nb["cells"] if c["cell_type"] == "code"][first_failed]["source"])
    assert "triage.start(" in failing_src
    assert json.loads((folders[0] / "triage.run.json").read_text())["status"] == "failed"


@pytest.mark.notebook
def test_plain_papermill_cli_works(stack, tmp_path):
    out_nb = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [str(BIN / "papermill"), str(ROOT / "notebooks" / "triage.ipynb"), str(out_nb),
         "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
         "-p", "prometheus_url", "", "-p", "timeout_s", "2", "--no-progress-bar"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = read_records(out_nb)
    assert rec["verdict"]["severity"] == "P4" and rec["decision"]["branch"] == "resolved"


@pytest.mark.notebook
@pytest.mark.parametrize("mode", ["ok", "auth_failure"])
def test_api_key_never_lands_in_the_record(stack, run_triage, api_key, mode):
    stack.set_mode(mode)
    result = run_triage(stack)
    folder = Path(result.record_dir)
    texts = {p.name: p.read_text("utf-8", errors="replace") for p in folder.iterdir()}
    assert set(texts) >= {"triage.ipynb", "triage.html", "triage.run.json"}
    pieces = {api_key[i:i + 8] for i in range(len(api_key) - 7)}
    for name, text in texts.items():
        assert api_key not in text, name
        leaked = [p for p in pieces if p in text]
        assert not leaked, f"{name} contains 8-character pieces of the key: {leaked}"
    assert read_records(result.notebook_path)["api_key"]["length"] == len(api_key)


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # the listing's own descriptor, already closed
            pass
    return count


def test_a_run_from_a_worker_thread_leaves_no_sockets_open(tmp_path):
    """`runbook serve` runs notebooks from pool threads: nbclient's per-thread event loop must not
    outlive the run (it held two sockets per thread until garbage collection)."""
    seen: dict[str, Any] = {}

    def work() -> None:
        before = _open_sockets()
        result = execute.run_notebook("triage", {"timeout_s": -1}, output_root=tmp_path, progress=False, html=False)
        seen.update(status=result.status, opened=_open_sockets() - before)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(120)
    assert seen.get("status") == "failed"  # the bad parameter ran the kernel, then failed the first cell
    assert seen["opened"] == 0, f"{seen['opened']} sockets stayed open in the worker thread after its run"
