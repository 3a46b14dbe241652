"""JupyterLab, the embedded stack and matplotlib are extras: the core runs without them and says so.

A production image installs the core only. Here the missing packages are hidden, in the CLI and
in every kernel it starts, by a `sitecustomize` on PYTHONPATH that makes importing them fail as
an absent package does; then a whole incident (the demo: respond, evidence, postmortem) must
still succeed with every number, its records saying which figures were left out, and the commands
that need an extra must name it.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from matrix_support import BIN, ROOT, read_json

BLOCKER = '''
import importlib.abc, os, sys

class _Absent(importlib.abc.MetaPathFinder):
    """Importing a hidden top-level package fails as if it were not installed."""
    hidden = set(os.environ.get("HIDE_PACKAGES", "").split(","))

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.partition(".")[0])
        return None

sys.meta_path.insert(0, _Absent())
'''


def _env(tmp_path: Path, hide: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k not in ("MISTRAL_API_KEY", "KUBECONFIG")}
    return {**env, "PYTHONPATH": str(site), "HIDE_PACKAGES": hide}


def test_the_core_dependencies_leave_the_extras_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for package, extra in (("jupyterlab", "lab"), ("kmock", "sim"), ("matplotlib", "plots")):
        assert package not in core, f"{package} is in the core dependencies"
        assert any(d.startswith(package) for d in extras[extra]), extra
        assert any(d.startswith(package) for d in extras["dev"]), f"make install (.[dev]) must bring {package}"


@pytest.mark.notebook
def test_a_whole_incident_without_matplotlib_records_every_number(tmp_path):
    env = _env(tmp_path, "matplotlib")
    probe = subprocess.run([str(BIN / "python"), "-c", "import matplotlib"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'matplotlib'" in probe.stderr, "the blocker does not work"
    out = subprocess.run([str(BIN / "runbook"), "demo", "--full", "--mode", "server_error", "--output-dir",
                          str(tmp_path / "o"), "-q"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = next((tmp_path / "o").glob("*-demo-server_error"))
    index = read_json(folder / "incident.json")
    assert index["postmortem"]["failed_requests"] > 0 and index["severity"]
    assert [nb["status"] for nb in index["notebooks"]] == ["succeeded"] * len(index["notebooks"])
    assert not list(folder.glob("*.png")), "a figure was drawn although matplotlib is hidden"
    html = (folder / "postmortem.html").read_text() + (folder / "diagnose_server_error.html").read_text()
    assert "Figure not drawn: matplotlib is not installed" in html
    assert "Traceback" not in html and "ModuleNotFoundError" not in html
    report = subprocess.run([str(BIN / "runbook"), "report", "--output-dir", str(tmp_path / "o")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "plot: not drawn: matplotlib is not installed" in report.stdout, report.stdout


@pytest.mark.parametrize("hide,args,extra", [
    ("kmock", ["demo"], "sim"),
    ("jupyterlab", ["open", "triage", "--incident-id", "EXTRA-1"], "lab"),
], ids=["demo-without-sim", "lab-without-jupyterlab"])
def test_a_command_needing_an_extra_names_it(tmp_path, hide, args, extra):
    out = subprocess.run([str(BIN / "runbook"), *args, "--output-dir", str(tmp_path / "o")], env=_env(tmp_path, hide),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    assert f"mistral-runbooks[{extra}]" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
