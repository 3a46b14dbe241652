"""Shared fixtures: a throwaway API key, the embedded stack on free ports, a runbook runner, and
the policy for the real servers the tests need.

Servers bind port 0 so xdist workers never collide; each test gets its own simulators (they
start in milliseconds), so a fault injected by one test cannot leak into another.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that refuses connections for the whole test: bound, never listening.

    Closing a probe socket and reusing its number races with every other process picking ports
    (kernels' ZMQ sockets, other tests' servers); holding it bound makes the refusal certain.
    """
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh key in MISTRAL_API_KEY; papermill's kernel inherits this process's environment."""
    key = "sim-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("MISTRAL_API_KEY", key)
    monkeypatch.delenv("KUBECONFIG", raising=False)  # step 4 only when a test gives a cluster
    return key


@pytest.fixture
def stack(api_key: str) -> Iterator[Any]:
    from runbook_lib.sim.stack import EmbeddedStack

    with EmbeddedStack(api_key=api_key, rate=20.0) as s:
        yield s


@pytest.fixture
def cluster_stack(api_key: str, tmp_path: Path) -> Iterator[Any]:
    """The stack plus the Kubernetes emulator serving our service's real log lines as pod logs."""
    from runbook_lib.sim.kube import KubeEmulator, file_log_source
    from runbook_lib.sim.stack import EmbeddedStack

    log = tmp_path / "service.log"
    with EmbeddedStack(api_key=api_key, rate=20.0, log_path=str(log)) as s, \
            KubeEmulator(log_source=file_log_source(log), api_key=api_key) as kube:
        s.kube = kube
        s.kubeconfig = {user: str(kube.write_kubeconfig(tmp_path / f"kubeconfig-{user}", user=user))
                        for user in ("ok", "expired", "forbidden")}
        yield s


def _require_binary(name: str) -> str:
    from runbook_lib.sim.prometheus import find_binary

    path = find_binary(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: the test command must install it (scripts/ensure-test-servers.sh)")
        pytest.skip(f"{name} not installed (make test installs it)")
    return path


@pytest.fixture(scope="session")
def require_binary() -> Callable[[str], str]:
    """`require_binary(name)`: the path of a real server's binary (prometheus, promtool, ...).

    Missing, the test is skipped on a developer's machine but FAILS under CI (any non-empty $CI):
    there the test command installs them, so a skip would hide a broken set-up. Session-scoped so
    module-scoped fixtures can use it too.
    """
    return _require_binary


@pytest.fixture
def run_runbook(tmp_path: Path) -> Callable[..., Any]:
    """`run_runbook(name, stack=None, **parameters)`: run notebooks/<name>.ipynb headless into
    tmp_path/outputs and return the RunResult.

    Defaults, each passed only where the notebook declares that parameter: the stack's URLs (and its
    status feed), from `cluster_stack` its "ok" kubeconfig, no Prometheus, 2 s per call, incident
    id "test". `parameters` override them and are passed as given, declared or not.
    """
    from runbook_lib.run.catalog import declared_parameters
    from runbook_lib.run.execute import run_notebook

    def run(name: str, stack: Any = None, /, **parameters: Any) -> Any:
        defaults: dict[str, Any] = {"prometheus_url": "", "timeout_s": 2.0, "incident_id": "test"}
        if stack is not None:
            defaults.update(mistral_url=stack.mistral_url, service_health_url=stack.service_health_url,
                            status_feed_url=f"{stack.mistral_url}/feed.rss")
            if getattr(stack, "kubeconfig", None):
                defaults["kubeconfig"] = stack.kubeconfig["ok"]
        declared = declared_parameters(name)
        base = {k: v for k, v in defaults.items() if k in declared}
        return run_notebook(name, {**base, **parameters}, output_root=tmp_path / "outputs", progress=False,
                            cell_timeout_s=60)

    return run


@pytest.fixture
def run_triage(run_runbook: Callable[..., Any]) -> Callable[..., Any]:
    """`run_triage(stack=None, **parameters)`: `run_runbook("triage", ...)`."""
    return functools.partial(run_runbook, "triage")


# ---- the fault and abuse matrix's totals (tests/test_matrix.py), printed at the end of the run ----
# The controller makes a folder and names it in the environment before xdist starts its workers
# (they inherit it); each matrix test appends JSON lines there; the summary adds them up.
def pytest_configure(config: pytest.Config) -> None:
    import tempfile

    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        folder = tempfile.mkdtemp(prefix="runbook-matrix-")
        config._matrix_totals_dir = folder  # type: ignore[attr-defined]
        os.environ["RUNBOOK_MATRIX_TOTALS"] = folder


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    folder = getattr(config, "_matrix_totals_dir", None)
    if not folder:
        return
    from matrix_support import format_totals, read_totals

    totals = read_totals(folder)
    if totals["lines"]:
        terminalreporter.section("fault and abuse matrix")
        for line in format_totals(totals):
            terminalreporter.write_line(line)
    from truth_support import format_truth

    truth = format_truth(folder)
    if truth:
        terminalreporter.section("truth matrix: each incident's record vs the simulators' ground truth")
        for line in truth:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    folder = getattr(config, "_matrix_totals_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
