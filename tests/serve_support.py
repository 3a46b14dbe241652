"""Helpers for tests that drive the real `runbook serve` process (issue 16: crashes, storms, faults)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import psutil

from runbook_lib.sim._http import wait_until

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(fp: str, status: str = "firing", name: str = "MistralServerErrors", error_class: str = "provider_error",
          starts_at: str = "2026-11-23T10:00:00Z", **labels: str) -> dict[str, Any]:
    """A Mistral rule's alert; any `name` not starting with Mistral is someone else's (no error_class, runbook)."""
    ours = name.startswith("Mistral")
    return {"status": status, "labels": {"alertname": name, "severity": "page",
                                         **({"error_class": error_class} if ours else {}), **labels},
            "annotations": {"summary": "Mistral answers 5xx", **({"runbook": "diagnose_server_error"} if ours else {})},
            "startsAt": starts_at,
            "endsAt": "2026-11-23T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fp}


def payload(*items: dict[str, Any], group_key: str = '{}:{alertname="MistralServerErrors"}') -> dict[str, Any]:
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": items[0]["status"],
            "receiver": "runbook-serve", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": list(items)}


def post(url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/webhook", content=data, timeout=timeout,
                      headers={"Content-Type": "application/json", **(headers or {})})


def serve_cmd(outputs: Path, stack: Any, port: int, *extra: str) -> list[str]:
    params = ["-r", "prometheus_url", "", "-p", "timeout_s", "2.0", "-p", "monitor_max_s", "1.0"]
    if stack is not None:
        params += ["-r", "mistral_url", stack.mistral_url, "-r", "service_health_url", stack.service_health_url]
    if "--warm" not in extra:  # standbys cost CPU on a 2-core machine; test_serve_warm tests them
        params += ["--warm", "0"]
    return [str(BIN / "runbook"), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir", str(outputs),
            *params, *extra]


def start_serve(outputs: Path, stack: Any, port: int, *extra: str, log: Path | None = None,
                **popen: Any) -> subprocess.Popen[bytes]:
    """The real CLI, ready (GET /readyz 200) or the test fails with its log."""
    log = log or outputs.parent / "serve.log"
    proc = subprocess.Popen(serve_cmd(outputs, stack, port, *extra), stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"), **popen)
    proc.log_path = log  # type: ignore[attr-defined]  # stop() shows it when serve does not end
    ok = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200, 30)
    assert ok, log.read_text()
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 90) -> int:
    """Signal serve and wait for its exit code; its stop is bounded (grace + kills), `timeout` leaves room for a
    loaded CI machine, and a serve that still has not ended fails the test with the end of its log."""
    if proc.poll() is None:
        proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # serve dumps every thread's stack into its log (faulthandler)
        time.sleep(1.0)
        proc.kill()
        log = getattr(proc, "log_path", None)
        tail = Path(log).read_text(errors="replace")[-8000:] if log and Path(log).exists() else "(no log)"
        raise AssertionError(f"serve still running {time.monotonic() - t0:.0f} s after signal {sig}:\n{tail}")


def folders(outputs: Path) -> list[Path]:
    return sorted(p for p in outputs.iterdir() if p.is_dir() and not p.name.startswith(".")) if outputs.exists() else []


def standby_processes(marker: str) -> list[psutil.Process]:
    """Live standbys (`serve --warm`: `runbook_lib _standby`, run/standby.py) of the serve whose output folder holds `marker`."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "_standby" in cmd and "runbook_lib" in cmd and any(marker in c for c in cmd):
            out.append(p)
    return out


def standby_folder(p: psutil.Process) -> str:
    """The incident folder a standby was handed (the `respond.log` it writes to), or "" while it waits."""
    try:
        logs = [f.path for f in p.open_files() if f.path.endswith("/respond.log")]
    except psutil.Error:
        return ""
    return str(Path(logs[0]).parent) if logs else ""


def respond_processes(marker: str) -> list[psutil.Process]:
    """Live respond runs whose command line holds `marker` (e.g. the output folder): `runbook_lib respond`
    processes, and standbys that were handed an incident (they run the same respond)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "respond" in cmd and "runbook_lib" in cmd and any(marker in c for c in cmd):
            out.append(p)
    return out + [p for p in standby_processes(marker) if standby_folder(p)]


def _run_cmdline(p: psutil.Process) -> list[str]:
    """A run's command line; a standby's with the folder it was handed as --record-dir (as a cold respond's)."""
    cmd = p.cmdline()
    return [*cmd, "--record-dir", standby_folder(p)] if "_standby" in cmd else cmd


class RespondWatcher:
    """Samples the respond processes for `marker` every 50 ms: every distinct one seen, and the most at once.

    A second run of one incident lasts seconds (kernel start-up alone), far longer than a sample.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen: dict[tuple[int, float], list[str]] = {}
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RespondWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = []
            procs = respond_processes(self.marker)
            pids = {p.pid for p in procs}
            for p in procs:
                try:
                    if p.ppid() in pids:
                        continue  # respond forking a child (kernel launch) before its exec: the same run
                    now.append(((p.pid, p.create_time()), _run_cmdline(p)))
                except psutil.Error:
                    continue
            for key, cmd in now:
                self.seen.setdefault(key, cmd)
            by_folder: dict[str, int] = {}
            for _key, cmd in now:
                folder = cmd[cmd.index("--record-dir") + 1] if "--record-dir" in cmd else ""
                by_folder[folder] = by_folder.get(folder, 0) + 1
            self.most_at_once = max([self.most_at_once, *by_folder.values()])
            time.sleep(0.05)

    def folders(self) -> list[str]:
        """The --record-dir of every respond seen, once per process."""
        return [cmd[cmd.index("--record-dir") + 1] for cmd in self.seen.values() if "--record-dir" in cmd]


def kill_respond_processes(marker: str) -> None:
    """Clean-up: runs outlive a kill -9 of serve by design; the test must not leave them behind."""
    for p in [*respond_processes(marker), *standby_processes(marker)]:
        try:
            for child in p.children(recursive=True):
                child.kill()
            p.kill()
        except psutil.Error:
            pass


def metric(url: str, name: str) -> float:
    """One sample's value from serve's /metrics (`name` with its labels, as exposed); 0 when absent."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 64 KiB tmpfs (we run as root: chmod cannot make a directory unwritable for us; a full or
    read-only filesystem can)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    assert done.returncode == 0, f"mount -t tmpfs failed (needs root): {done.stderr.decode()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder: Path, leave: int) -> Path:
    """Fill the filesystem of `folder` but `leave` bytes; the filler file, to delete for space back."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler
