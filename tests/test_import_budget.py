"""Each layer's modules import what they need and no more: the verdict path stays lean.

A fresh interpreter imports one module and reports which heavy packages came with it. Sub-package
`__init__` files are documentation only, so importing `runbook_lib.runbooks.triage` must not pull
pandas, kubernetes, matplotlib, papermill or nbconvert (each costs 0.25-2.4 s here).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "kubernetes", "matplotlib", "papermill", "nbconvert", "nbformat", "jsonschema")
LIGHT_MODULES = [
    "runbook_lib", "runbook_lib.runbooks.triage", "runbook_lib.runbooks.steps", "runbook_lib.sources.probes",
    "runbook_lib.analysis.severity", "runbook_lib.analysis.decision", "runbook_lib.analysis.impact",
    "runbook_lib.kube", "runbook_lib.records.archive", "runbook_lib.records.incident",
    "runbook_lib.records.index_page", "runbook_lib.records.provenance", "runbook_lib.serve.alerts",
]


def _loaded(module: str) -> list[str]:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_no_heavy_package(module):
    assert _loaded(module) == [], f"importing {module} pulled heavy packages"


def test_the_probe_can_fail():
    """The check sees a heavy import when there is one (so the test above is not vacuous)."""
    assert "pandas" in _loaded("runbook_lib.analysis.impact, pandas")
