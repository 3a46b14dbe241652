"""The kubectl commands a runbook's records hold, collected from real notebook runs and run with the real kubectl.

triage and diagnose_auth (dry run, with a new key ready to rotate in) run headless against the stack
and the HTTPS cluster emulator; every command in their records (reads, changes, undos) is then run
with kubectl against that same emulator: reads as recorded, writes with `--dry-run=server` (nothing
may be stored), and the rollout restart, which kubectl cannot dry-run, for real at the end.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.record import read_records

pytestmark = pytest.mark.notebook

_WRITES = (" set env ", " annotate ", " rollout restart ", " rollout undo ", " patch secret ")


def _commands(value: Any, out: list[str], undos: list[str], key: str = "") -> list[str]:
    """Every kubectl command line in a record value (an undo's prose prefix cut off); undos apart."""
    if isinstance(value, dict):
        for k, v in value.items():
            _commands(v, out, undos, k)
    elif isinstance(value, list):
        for v in value:
            _commands(v, out, undos, key)
    elif isinstance(value, str) and "kubectl " in value and key == "undo":
        text = value.split("then: ", 1)[1] if "then: " in value else value
        if text not in undos:
            undos.append(text)
    elif isinstance(value, str) and "kubectl " in value:
        text = value.split("then: ", 1)[1] if "then: " in value else value
        if text.startswith(("kubectl ", "test -n ")) and text not in out:
            out.append(text)
    return out


def _run(line: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cache = tmp_path / "kube-cache"
    line = re.sub(r"(^|[|&;]\s*)kubectl ", lambda m: f"{m.group(1)}kubectl --cache-dir {cache} ", line)
    return subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env})


def test_every_recorded_command_runs_with_the_real_kubectl(cluster_stack: Any, api_key: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, run_runbook: Any) -> None:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed: make test installs it (kubernetes-client)")
        pytest.skip("kubectl not installed (make test installs Debian's kubernetes-client)")
    st = cluster_stack
    new_key = "sim-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    st.mistral.set_api_keys([new_key])  # the old key is revoked, the new one works: rotation is planned
    st.set_mode("auth_failure")
    commands: list[str] = []
    undos: list[str] = []
    for name, extra in (("diagnose_auth", {"new_key_env": "NEW_MISTRAL_API_KEY", "operator": "erin"}),
                        ("triage", {})):
        result = run_runbook(name, st, **extra)
        assert result.ok, result.error
        _commands(read_records(result.notebook_path), commands, undos)
    writes = [c for c in commands if any(w in c for w in _WRITES)]
    reads = [c for c in commands if c not in writes]
    assert any(" logs " in c for c in reads) and any("get deployment" in c for c in reads), reads
    assert any("patch secret" in c for c in writes) and any("rollout restart" in c for c in writes), writes

    kube = st.kube
    env = {"KUBECONFIG": st.kubeconfig["ok"], "NEW_MISTRAL_API_KEY": new_key, "OLD_MISTRAL_API_KEY": api_key}
    before = copy.deepcopy([kube.get("apps/v1/deployments", "mistral-service"), kube.get("v1/secrets", "mistral-secrets")])
    ran = 0
    for cmd in reads:
        done = _run(cmd, tmp_path, env)
        assert done.returncode == 0 and done.stdout.strip(), f"{cmd}\n{done.stderr}"
        ran += 1
    restarts = []
    kube.clear_requests()
    for cmd in writes:
        assert new_key not in cmd and api_key not in cmd
        for part in re.split(r" && (?=kubectl )", cmd):  # `test -n "$KEY" && printf ... | kubectl` stays whole
            if " rollout restart " in part:
                restarts.append(part)  # kubectl has no --dry-run for it: run for real below
                continue
            sent = len(kube.writes())
            done = _run(part + " --dry-run=server", tmp_path, env)  # (kubectl patch does not say "dry run")
            assert done.returncode == 0, f"{part}\n{done.stderr}"
            assert len(kube.writes()) > sent, part  # it reached the server (as a dry run: checked below)
            ran += 1
    assert [kube.get("apps/v1/deployments", "mistral-service"), kube.get("v1/secrets", "mistral-secrets")] == before
    assert kube.writes() and all(w["query"].get("dryRun") == "All" for w in kube.writes())
    rev = int(before[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    for part in restarts:
        done = _run(part, tmp_path, env)
        assert done.returncode == 0, f"{part}\n{done.stderr}"
        ran += 1
    assert restarts and int(kube.get("apps/v1/deployments", "mistral-service")["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"]) == rev + 1
    # the undos, now that the restart has happened (before it, rolling back to the current revision is a no-op)
    assert any("rollout undo" in u for u in undos) and any("patch secret" in u for u in undos), undos
    applied = copy.deepcopy([kube.get("apps/v1/deployments", "mistral-service"), kube.get("v1/secrets", "mistral-secrets")])
    kube.clear_requests()
    for cmd in undos:
        assert "--kubeconfig" not in cmd and "--context embedded" in cmd and " -n default" in cmd, cmd
        sent = len(kube.writes())
        done = _run(cmd + " --dry-run=server", tmp_path, env)
        assert done.returncode == 0 and len(kube.writes()) > sent, f"{cmd}\n{done.stderr}"
        ran += 1
    assert all(w["query"].get("dryRun") == "All" for w in kube.writes())
    assert [kube.get("apps/v1/deployments", "mistral-service"), kube.get("v1/secrets", "mistral-secrets")] == applied
    print(f"\n{len(commands) + len(undos)} recorded commands ({len(reads)} reads, {len(writes)} changes, "
          f"{len(undos)} undos), "
          f"{ran} kubectl runs")
