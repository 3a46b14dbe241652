"""Tracked notebooks never hold outputs: the runbooks in git are runbooks, not records.

What is checked: every notebooks/*.ipynb as git holds it (HEAD and the index) has no outputs,
no execution counts and no run metadata; the clean filter (`scripts/strip_notebook_outputs.py`,
applied by `.gitattributes`) leaves those notebooks byte for byte as they are, and in a real git
repository set up as the README says it commits an executed notebook without its outputs while
the working copy keeps them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "scripts" / "strip_notebook_outputs.py"
FILTER_NAME = "strip-notebook-outputs"


def _git(*args: str, cwd: Path = ROOT, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False)


def _tracked() -> dict[str, dict[str, bytes]]:
    """Path -> {"HEAD": bytes, "index": bytes} for every tracked notebooks/*.ipynb (skip outside a checkout)."""
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: nothing tracked to check")
    names = _git("ls-files", "--", "notebooks/*.ipynb").stdout.decode().split()
    found: dict[str, dict[str, bytes]] = {}
    for name in names:
        versions = {}
        for where, spec in (("HEAD", f"HEAD:{name}"), ("index", f":{name}")):
            shown = _git("show", spec)
            if shown.returncode == 0:
                versions[where] = shown.stdout
        found[name] = versions
    return found


def _run_traces(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("outputs"):
            problems.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count {cell['execution_count']}")
        extra = set(cell.get("metadata", {})) & {"execution", "papermill"}
        if extra:
            problems.append(f"cell {i}: run metadata {sorted(extra)}")
    extra = set(nb.get("metadata", {})) & {"papermill", "runbook"}
    if extra:
        problems.append(f"notebook run metadata {sorted(extra)}")
    return problems


def test_every_tracked_notebook_is_without_outputs() -> None:
    tracked = _tracked()
    assert len(tracked) >= 7, f"expected the runbooks under notebooks/, git tracks {sorted(tracked)}"
    for name, versions in tracked.items():
        assert versions, f"{name}: neither in HEAD nor in the index"
        for where, blob in versions.items():
            problems = _run_traces(json.loads(blob))
            assert not problems, f"{name} ({where}) holds what a run wrote: {problems}"


def test_the_filter_keeps_clean_notebooks_byte_for_byte_and_is_applied_to_notebooks() -> None:
    tracked = _tracked()
    for name, versions in tracked.items():
        blob = versions.get("index") or versions["HEAD"]
        cleaned = subprocess.run([sys.executable, str(FILTER)], input=blob, capture_output=True, timeout=30,
                                 check=True).stdout
        assert cleaned == blob, f"{name}: the clean filter would change a notebook without outputs"
    attr = _git("check-attr", "filter", "--", "notebooks/triage.ipynb").stdout.decode()
    assert attr.strip().endswith(f"filter: {FILTER_NAME}"), f".gitattributes does not apply the filter: {attr!r}"


def test_readme_setup_commits_an_executed_notebook_without_outputs(tmp_path: Path) -> None:
    """The README's two `git config` lines in a fresh repository: the commit has no outputs, the copy keeps them."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    readme = (ROOT / "README.md").read_text("utf-8")
    setup = re.findall(rf"^\s*(git config filter\.{FILTER_NAME}\.\w+ .+)$", readme, re.MULTILINE)
    assert len(setup) == 2, f"the README should give the filter's clean and smudge lines, found {setup}"
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "scripts").mkdir()
    shutil.copy(FILTER, repo / "scripts" / FILTER.name)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    assert _git("init", "-q", cwd=repo).returncode == 0
    for line in setup:
        assert subprocess.run(line, shell=True, cwd=repo, timeout=30).returncode == 0, line
    source = json.loads((ROOT / "notebooks" / "triage.ipynb").read_text("utf-8"))
    executed = json.loads(json.dumps(source))
    code = next(c for c in executed["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["fingerprint sha256:0123456789ab\n"]}]
    code["metadata"]["execution"] = {"iopub.status.busy": "2026-12-04T10:00:00Z"}
    executed["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    path = repo / "notebooks" / "triage.ipynb"
    path.write_text(json.dumps(executed, indent=1), "utf-8")

    git_id = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    assert _git("add", ".", cwd=repo).returncode == 0
    assert _git(*git_id, "commit", "-q", "-m", "x", cwd=repo).returncode == 0
    committed = json.loads(_git("show", "HEAD:notebooks/triage.ipynb", cwd=repo).stdout)
    assert _run_traces(committed) == []
    assert committed == source, "the commit should be the runbook exactly as shipped"
    assert "0123456789ab" in path.read_text("utf-8"), "the working copy keeps its outputs (only git strips them)"
    status = _git("status", "--porcelain", "notebooks/", cwd=repo).stdout.decode()
    assert status == "", f"outputs in the working copy should not show as a change: {status!r}"
