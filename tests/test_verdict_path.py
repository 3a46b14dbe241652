"""The verdict path leaves out jsonschema's iri checkers (rfc3987_syntax: ~1.7 s at import) and nothing else.

run/_lean.py imports jsonschema with `rfc3987_syntax` hidden for that one import. Proven here in
fresh interpreters: the real `runbook run` never imports it; notebook validation still rejects a
broken notebook; the module stays importable for anyone else in the process. (The time saved is
measured side by side in benchmarks/triage.py, not asserted here.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from matrix_support import ROOT, cli_env

PROBE = """
import json, sys
from runbook_lib.run import _lean
nbformat = _lean.nbformat()
pm = _lean.papermill()
loaded = "rfc3987_syntax" in sys.modules
good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
nbformat.validate(good)
bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
bad.cells[0]["outputs"] = [{"output_type": "no-such-output"}]
try:
    nbformat.validate(bad)
    rejected = False
except nbformat.ValidationError:
    rejected = True
import rfc3987_syntax
print(json.dumps({"loaded_by_lean": loaded, "rejected": rejected, "later": rfc3987_syntax.__name__}))
"""


def test_lean_import_skips_iri_checkers_only():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got == {"loaded_by_lean": False, "rejected": True, "later": "rfc3987_syntax"}


CLI_RUN = """
import json, sys
from runbook_lib.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(m for m in ("papermill", "nbconvert", "jsonschema", "rfc3987_syntax")
                                                 if sys.modules.get(m) is not None)}))
"""


def test_the_cli_run_path_never_imports_rfc3987_syntax(tmp_path, api_key):
    # Every endpoint refused at once: the run is short, and the whole path (run, record, HTML) is taken.
    dead = "http://127.0.0.1:9"
    out = subprocess.run([sys.executable, "-c", CLI_RUN, "run", "triage", "-q", "--output-dir", str(tmp_path / "o"),
                          "-p", "mistral_url", dead, "-p", "service_health_url", dead + "/health",
                          "-p", "prometheus_url", "", "-p", "timeout_s", "1", "--incident-id", "LEAN-1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=cli_env(api_key))
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got == {"rc": 0, "modules": ["jsonschema", "nbconvert", "papermill"]}, got
    assert list((tmp_path / "o").glob("*-LEAN-1/triage.html")), "the run left no record"


def test_the_html_rendered_with_the_warmed_exporter_equals_a_fresh_render(tmp_path, api_key):
    """run_notebook renders with an exporter warmed during the run; the page must be the same."""
    from nbconvert import HTMLExporter

    from runbook_lib.run.execute import run_notebook

    dead = "http://127.0.0.1:9"
    result = run_notebook("triage", {"mistral_url": dead, "service_health_url": dead + "/health",
                                     "prometheus_url": "", "timeout_s": 1, "incident_id": "HTML-1"},
                          output_root=tmp_path, progress=False)
    assert result.status == "succeeded" and result.html_path
    fresh, _ = HTMLExporter().from_filename(result.notebook_path)
    written = Path(result.html_path).read_text("utf-8")
    assert "Incident HTML-1" in written and written == fresh


def _kernel_children() -> list[str]:
    """Command lines of this process's live children that are Jupyter kernels."""
    import os

    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields.get("PPid", "0")) != os.getpid() or fields.get("State", "").startswith("Z"):
                continue
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "ipykernel" in cmdline:
            found.append(cmdline)
    return found


def test_the_early_kernel_is_stopped_and_writes_no_ipython_history(tmp_path, api_key, monkeypatch):
    """run/kernel.py starts the kernel itself (before papermill loads): it must end with the run,
    and like nbclient's own it keeps IPython's history in memory (nothing under $HOME)."""
    from runbook_lib.run.execute import run_notebook

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(home / ".ipython"))
    dead = "http://127.0.0.1:9"
    result = run_notebook("triage", {"mistral_url": dead, "service_health_url": dead + "/health",
                                     "prometheus_url": "", "timeout_s": 1, "incident_id": "KERNEL-1"},
                          output_root=tmp_path / "o", progress=False)
    assert result.status == "succeeded", result.error
    assert _kernel_children() == []
    assert not list(home.rglob("history.sqlite")), "the kernel wrote IPython history outside the record"
