"""`runbook serve`: webhook received -> triage verdict recorded (issue 17): figures, no pass/fail.

The real CLI against the embedded simulators in 5xx mode. Measured from just before the webhook's
POST, polling the incident's folder every 10 ms:
- single: `--single` alerts, one at a time, each for a new service (a new incident each time);
- burst: `--burst` alerts of distinct services posted at once (each a new incident), with
  `--workers` runs at a time (each value given: a respond holds its slot through its diagnosis, so
  with 2 workers the tenth triage waits for four whole responds), as an operator would configure serve.
Two moments are reported: the verdict in incident.json (respond writes the triage's class, verdict
line and severity there as soon as the executed notebook is final, before its HTML) and the triage's
record complete (triage.run.json, written after the HTML).
Each with every `--warm` value given (default 0, 2 and 10: no pool, the default pool, a pool as large
as the burst), one serve each, side by side; every figure starts from a full pool (the bench waits
for the standbys' ready lines). Beside them, in the same run, `runbook run triage` as a process (the
cold floor of one run), so the figures can be read as ratios on any machine.

Run: `.venv/bin/python benchmarks/serve_latency.py [--single 5 --burst 10 --workers 2 10 --warm 0 2 10]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.sim.stack import EmbeddedStack  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = secrets.token_hex(16)


def _fingerprint(service: str) -> str:
    import hashlib

    return hashlib.sha256(service.encode()).hexdigest()[:16]


def _webhook(service: str) -> dict[str, Any]:
    alert = {"status": "firing",
             "labels": {"alertname": "MistralServerErrors", "severity": "page", "error_class": "provider_error",
                        "cluster": "c1", "namespace": "shop", "service": service},
             "annotations": {"summary": "Mistral answers 5xx"}, "startsAt": "2026-12-05T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
             "fingerprint": _fingerprint(service)}
    return {"version": "4", "groupKey": f'{{}}:{{service="{service}"}}', "truncatedAlerts": 0, "status": "firing",
            "receiver": "runbook-serve", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": [alert]}


def _verdict_times(outputs: Path, services: list[str], t0: dict[str, float],
                   timeout_s: float) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds from each service's POST to (1) the triage's verdict in its incident.json (`error_class`
    and `verdict` set: what `runbook list`/`show` read) and (2) its triage.run.json (the triage's record
    complete: notebook, HTML, run.json)."""
    verdicts: dict[str, float] = {}
    complete: dict[str, float] = {}
    seen: dict[Path, str] = {}
    read_at: dict[Path, int] = {}  # incident.json's mtime when last read: the poll itself must not eat the CPU
    deadline = time.monotonic() + timeout_s
    while len(complete) < len(services) and time.monotonic() < deadline:
        for folder in outputs.glob("*/"):
            index_path = folder / "incident.json"
            try:
                mtime = index_path.stat().st_mtime_ns
                if read_at.get(folder) == mtime and not (seen.get(folder) in verdicts
                                                         and seen.get(folder) not in complete):
                    continue
                index = json.loads(index_path.read_text())
                read_at[folder] = mtime
            except (OSError, ValueError):
                continue
            if folder not in seen:
                prints = {a.get("fingerprint") for a in index.get("alerts") or []}
                service = next((s for s in services if _fingerprint(s) in prints), None)
                if service is None or service not in t0:
                    continue
                seen[folder] = service
            service = seen[folder]
            now = time.monotonic() - t0[service]
            if index.get("verdict") and service not in verdicts:
                verdicts[service] = now
            if (folder / "triage.run.json").is_file() and service not in complete:
                complete[service] = now
                verdicts.setdefault(service, now)
        time.sleep(0.01)
    return verdicts, complete


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _serve_run(stack: Any, tmp: Path, params: list[str], workers: int, warm: int, n_single: int,
               n_burst: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """One serve (`--workers`, `--warm`): single alerts, then a burst; seconds to each verdict."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    tmp.mkdir(parents=True, exist_ok=True)
    outputs = tmp / f"outputs-warm{warm}"
    log = open(tmp / f"serve-warm{warm}.log", "wb")
    serve = subprocess.Popen([str(BIN / "runbook"), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir",
                              str(outputs), "--workers", str(workers), "--warm", str(warm), *params],
                             stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUNBOOK_SERVE_TOKEN": TOKEN})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serve did not become ready:\n" + (tmp / f"serve-warm{warm}.log").read_text())
            time.sleep(0.1)
        _wait_standbys(outputs, warm)
        single: list[float] = []
        single_complete: list[float] = []
        for i in range(n_single):
            service = f"single{i}"
            t0 = {service: time.monotonic()}
            httpx.post(f"{url}/webhook", json=_webhook(service), headers=headers, timeout=10).raise_for_status()
            verdicts, complete = _verdict_times(outputs, [service], t0, 120)
            single += verdicts.values()
            single_complete += complete.values()
            time.sleep(0.5)
            _wait_standbys(outputs, warm)  # the pool refills between single alerts (not during a burst)
        services = [f"burst{i}" for i in range(n_burst)]
        t0: dict[str, float] = {}
        barrier = threading.Barrier(len(services))

        def post(service: str) -> None:
            barrier.wait()
            t0[service] = time.monotonic()
            httpx.post(f"{url}/webhook", json=_webhook(service), headers=headers, timeout=10).raise_for_status()

        threads = [threading.Thread(target=post, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        verdicts, complete = _verdict_times(outputs, services, t0, 300)
    finally:
        serve.terminate()
        serve.wait(60)
    return single, single_complete, list(verdicts.values()), list(complete.values())


def _wait_standbys(outputs: Path, warm: int, timeout_s: float = 120) -> None:
    """Until serve's `warm` standbys have all said ready (their log lines), so each figure starts from a full pool."""
    if warm <= 0:
        return
    log = outputs / ".serve" / "standby.log"
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        ready = text.count(" ready in ")
        used = sum(1 for f in outputs.glob("*/respond.log"))
        if ready - used >= warm:
            return
        if ready != seen:
            seen = ready
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", type=int, default=5)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 10],
                    help="serve --workers values for the burst (single alerts are measured with the first)")
    ap.add_argument("--warm", type=int, nargs="+", default=[0, 2, 10],
                    help="serve --warm values to measure side by side (0: every respond cold, as before)")
    ap.add_argument("--keep", default="", help="keep the incident folders and serve logs in this (new) folder")
    args = ap.parse_args()
    results: dict[tuple[int, int], tuple[list[float], list[float], list[float], list[float]]] = {}
    if args.keep:
        Path(args.keep).mkdir(parents=True)
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="serve-latency-")) as tmp, \
            EmbeddedStack(api_key="sim-" + secrets.token_urlsafe(16), rate=10.0) as stack:
        stack.set_mode("server_error", status=503)
        params = ["-r", "mistral_url", stack.mistral_url, "-r", "service_health_url", stack.service_health_url,
                  "-r", "prometheus_url", "", "-p", "timeout_s", "2.0", "-p", "monitor_max_s", "1.0"]
        # the cold floor: one triage run as a process, same parameters
        floor = []
        for i in range(3):
            t = time.monotonic()
            subprocess.run([str(BIN / "runbook"), "run", "triage", "--output-dir", str(Path(tmp) / "cli"),
                            "--incident-id", f"floor-{i}", *params[:-3]], capture_output=True, check=False)
            floor.append(time.monotonic() - t)
        for n, workers in enumerate(args.workers):
            for warm in args.warm:
                results[workers, warm] = _serve_run(stack, Path(tmp) / f"w{workers}", params, workers, warm,
                                                    args.single if n == 0 else 0, args.burst)
    fl = statistics.median(floor)
    print(f"runbook run triage as a process (cold floor, median of {len(floor)}): {fl:.2f} s")
    for (workers, warm), (single, single_complete, burst, burst_complete) in results.items():
        pool = f"--warm {warm}" + (" (no pool: every respond cold)" if warm == 0 else "")
        if single:
            p50 = statistics.median(single)
            print(f"serve {pool}, one alert at a time ({len(single)} incidents): webhook -> verdict in incident.json "
                  f"p50 {p50:.2f} s (max {max(single):.2f} s; {p50 / fl:.2f}x the cold floor); triage record complete "
                  f"p50 {statistics.median(single_complete):.2f} s")
        if burst:
            print(f"serve {pool}, {args.burst} alerts at once, {workers} workers ({len(burst)} of {args.burst} "
                  f"verdicts): verdict in incident.json p50 {_pct(burst, 0.5):.2f} s, p99 {_pct(burst, 0.99):.2f} s "
                  f"({_pct(burst, 0.5) / fl:.2f}x / {_pct(burst, 0.99) / fl:.2f}x the cold floor); triage record "
                  f"complete p50 {_pct(burst_complete, 0.5):.2f} s, p99 {_pct(burst_complete, 0.99):.2f} s")
    print("target (issue 17): p50 <= 1.5 s, p99 bounded, 10 alerts at once")


if __name__ == "__main__":
    main()
