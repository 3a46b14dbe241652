"""Helpers for tests/test_matrix.py: record checks, leak scans, tree snapshots, the shared totals file.

The totals: each matrix test appends JSON lines to `$RUNBOOK_MATRIX_TOTALS` (a folder made by the
pytest controller in tests/conftest.py and inherited by the xdist workers), and conftest's
`pytest_terminal_summary` adds them up at the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOTALS_ENV = "RUNBOOK_MATRIX_TOTALS"
TOTALS_FILE = "matrix-totals.jsonl"
_lock = threading.Lock()

SEVERITIES = ("P1", "P2", "P3", "P4")
RECORD_FILES = ("triage.ipynb", "triage.html", "triage.run.json", "index.html")  # index.html: the folder's entry point


# ---- totals -------------------------------------------------------------------------------------
def add_totals(kind: str, **data: Any) -> None:
    """Append one line for the end-of-run summary (no-op when the controller set no folder)."""
    folder = os.environ.get(TOTALS_ENV)
    if not folder:
        return
    line = json.dumps({"kind": kind, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), **data})
    with _lock, open(Path(folder) / TOTALS_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")  # one short write per line: appends from several processes stay whole


def read_totals(folder: str | Path) -> dict[str, Any]:
    """Sum the lines written by every worker."""
    path = Path(folder) / TOTALS_FILE
    lines = [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()] if path.exists() else []
    t: dict[str, Any] = {"lines": len(lines), "scenarios": 0, "verdicts": 0, "complete_records": 0,
                         "within_bound": 0, "leaks": 0, "unapproved_writes": 0, "kube_requests": 0,
                         "malformed": 0, "malformed_rejected_correctly": 0, "concurrent_runs": 0,
                         "concurrent_distinct": 0, "kill_runs": 0, "kill_recorded": 0, "run_timeouts": 0,
                         "run_timeouts_recorded": 0, "max_duration_s": 0.0}
    for x in lines:
        kind = x["kind"]
        if kind == "scenario":
            t["scenarios"] += 1
            t["verdicts"] += bool(x.get("verdict"))
            t["complete_records"] += bool(x.get("complete"))
            t["within_bound"] += bool(x.get("within_bound"))
            t["max_duration_s"] = max(t["max_duration_s"], float(x.get("duration_s") or 0))
        elif kind == "kube":
            t["unapproved_writes"] += int(x.get("unapproved_writes", 0))
            t["kube_requests"] += int(x.get("requests", 0))
        elif kind == "malformed":
            t["malformed"] += 1
            t["malformed_rejected_correctly"] += bool(x.get("ok"))
        elif kind == "concurrent":
            t["concurrent_runs"] += int(x.get("runs", 0))
            t["concurrent_distinct"] += int(x.get("distinct", 0))
        elif kind == "kill":
            t["kill_runs"] += 1
            t["kill_recorded"] += bool(x.get("ok"))
        elif kind == "run_timeout":
            t["run_timeouts"] += 1
            t["run_timeouts_recorded"] += bool(x.get("ok"))
        t["leaks"] += int(x.get("leaks", 0))
    return t


def format_totals(t: dict[str, Any]) -> list[str]:
    return [
        f"scenarios (mode x prometheus x cluster): {t['scenarios']}, verdicts reached: {t['verdicts']}, "
        f"complete records: {t['complete_records']}, within their bound: {t['within_bound']} "
        f"(longest run {t['max_duration_s']:.1f} s)",
        f"leaks found (8-character pieces of the API key in a record): {t['leaks']}",
        f"unapproved writes to the Kubernetes emulator: {t['unapproved_writes']} "
        f"(of {t['kube_requests']} requests seen)",
        f"malformed parameter sets rejected correctly: {t['malformed_rejected_correctly']} of {t['malformed']}",
        f"concurrent runs with distinct, complete records: {t['concurrent_distinct']} of {t['concurrent_runs']}",
        f"kernel killed mid-run, recorded as failed: {t['kill_recorded']} of {t['kill_runs']}; "
        f"whole-run deadline hit, recorded as timed_out: {t['run_timeouts_recorded']} of {t['run_timeouts']}",
    ]


# ---- leaks --------------------------------------------------------------------------------------
def key_pieces(key: str, n: int = 8) -> set[str]:
    return {key[i:i + n] for i in range(len(key) - n + 1)}


def leaks_in(folder: Path, key: str) -> list[str]:
    """`file: piece` for every 8-character piece of `key` found in any file under `folder`."""
    pieces = key_pieces(key)
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{path.name}: {p}" for p in pieces if p in text]
    return found


# ---- snapshots ----------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) for everything under `root` (folders too)."""
    root = Path(root)
    if not root.exists():
        return {}
    out = {}
    for path in root.rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else -1, st.st_mtime_ns)
    return out


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))


# ---- running ------------------------------------------------------------------------------------
def cli(args: Iterable[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "runbook"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def cli_env(key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RUNBOOK_NOTEBOOKS")}
    env.update(MISTRAL_API_KEY=key, **extra)
    return env


def wait_until(check: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    return check()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text("utf-8"))


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def validation_cell_index(nb: dict[str, Any]) -> int:
    """Index in nb["cells"] of the first code cell after papermill's injected-parameters cell."""
    injected = next(i for i, c in enumerate(nb["cells"]) if "injected-parameters" in c["metadata"].get("tags", []))
    return next(i for i, c in enumerate(nb["cells"]) if i > injected and c["cell_type"] == "code")


def failed_cells(nb: dict[str, Any]) -> list[int]:
    return [i for i, c in enumerate(nb["cells"]) if c["metadata"].get("papermill", {}).get("status") == "failed"]


# ---- Prometheus ---------------------------------------------------------------------------------
def retarget(prom: Any, target: str) -> None:
    """Point the running Prometheus at another scrape target (config rewritten, POST /-/reload)."""
    import httpx

    prom.targets = [target]
    Path(prom._tmp.name, "prometheus.yml").write_text(prom.config_text())  # noqa: SLF001 - test helper
    httpx.post(f"{prom.url}/-/reload", timeout=10).raise_for_status()


# ---- the embedded stack in its own process --------------------------------------------------------
_STACK_CHILD = """
import json, sys
from runbook_lib.sim.stack import EmbeddedStack
args = json.loads(sys.argv[1])
with EmbeddedStack(**args) as stack:
    print(json.dumps({"mistral_url": stack.mistral_url, "service_url": stack.service.url,
                      "service_health_url": stack.service_health_url}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


class StackProcess:
    """`EmbeddedStack(**args)` in a child Python process; a context manager exposing its URLs.

    Why: the matrix runs three notebooks at once through papermill in this process's threads
    (notebook validation and saves are CPU-bound); simulators sharing that GIL answered probes
    in over a second (CI saw mode "ok" judged slow), which measured the test harness, not the fault.
    In its own process the simulator answers as a real API would, whatever the harness does.
    """

    def __init__(self, **args: Any) -> None:
        self.args = args
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "StackProcess":
        self._proc = subprocess.Popen([sys.executable, "-c", _STACK_CHILD, json.dumps(self.args)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = wait_until_line(self._proc, timeout_s=30)
        urls = json.loads(line)
        self.mistral_url, self.service_url = urls["mistral_url"], urls["service_url"]
        self.service_health_url = urls["service_health_url"]
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_until_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first stdout line within `timeout_s`, or an error saying it did not start."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if not box or not box[0].strip():
        proc.kill()
        raise RuntimeError(f"the embedded stack's process did not start within {timeout_s:g} s "
                           f"(exit code {proc.poll()})")
    return box[0]
