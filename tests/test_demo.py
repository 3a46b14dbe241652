"""`make demo`'s job end to end: the whole incident cycle on the embedded stack, then the archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook
BIN = Path(sys.executable).parent


def test_full_demo_then_list_show_report_verify(tmp_path, require_binary):
    if os.environ.get("CI"):  # CI must show the demo with Prometheus; on a dev machine it runs without
        require_binary("prometheus")
    env = {k: v for k, v in os.environ.items() if k not in ("MISTRAL_API_KEY", "KUBECONFIG")}
    out = subprocess.run([str(BIN / "runbook"), "demo", "--full", "--mode", "auth_failure", "--output-dir",
                          str(tmp_path), "-q"], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "triage: P1 auth failure -> diagnose_auth" in out.stdout
    folder = next(p for p in tmp_path.iterdir() if p.name.endswith("-demo-auth_failure"))
    index = json.loads((folder / "incident.json").read_text())
    assert index["error_class"] == "auth" and index["postmortem"]["failed_requests"] > 0
    assert (folder / "postmortem.md").read_text().startswith("## Incident: Mistral AI Authentication failure (401)")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "runbook"), *args, "--output-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0 and "demo-auth_failure" in listed.stdout and "P1" in listed.stdout
    shown = cli("show", "demo-auth_failure")
    assert shown.returncode == 0 and "postmortem" in shown.stdout.lower()
    assert cli("verify", "demo-auth_failure").returncode == 0
    report = cli("report")
    assert report.returncode == 0 and (tmp_path / "report.png").stat().st_size > 1000
