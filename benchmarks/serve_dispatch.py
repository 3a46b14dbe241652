"""`runbook serve --dispatch kubernetes` under a burst (issue 19): figures, no pass/fail.

The real CLI against the Kubernetes emulator (HTTPS, the official client). `--alerts` firing alerts
of as many services, one webhook each, posted at once by 20 client threads to every one of
`--replicas` serve processes (each with its own state directory, as replicas on different machines
would be). Measured:
- dispatch latency per alert: from just before its webhook's POST to the moment the emulator
  received the Job's create that succeeded (its request log), p50/p99/max;
- Jobs created vs incidents opened, and Jobs doubled (two Jobs for one alert: must be 0; with
  replicas, every other create must be answered 409 and adopted);
- a retry burst (Alertmanager resending everything): new creates (must be 0);
- then every Job is marked finished in the emulator (it has no kubelet; this script plays the Job
  controller) and the time until every serve has recorded every outcome and emptied its spool.

Run: `.venv/bin/python benchmarks/serve_dispatch.py [--alerts 200 --replicas 1]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.sim.kube import KubeEmulator  # noqa: E402

BIN = Path(sys.executable).parent
NS = "bench-dispatch"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _webhook(service: str) -> tuple[str, dict[str, Any]]:
    fp = hashlib.sha256(service.encode()).hexdigest()[:16]
    alert = {"status": "firing", "fingerprint": fp, "startsAt": "2026-12-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
             "labels": {"alertname": "MistralServerErrors", "severity": "page", "error_class": "provider_error",
                        "service": service},
             "annotations": {"summary": "Mistral answers 5xx", "runbook": "diagnose_server_error"}}
    return fp, {"version": "4", "groupKey": f'{{}}:{{service="{service}"}}', "truncatedAlerts": 0,
                "status": "firing", "receiver": "runbook-serve", "groupLabels": {}, "commonLabels": {},
                "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": [alert]}


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=200)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="serve --workers (handling threads; Jobs are bounded by --max-jobs)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    labels = tmp / "labels.yml"
    labels.write_text("service_labels: [service]\nparameters: {namespace: '{service}'}\n")
    hooks = [_webhook(f"svc-{i:04d}") for i in range(args.alerts)]
    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
        procs, urls, outs = [], [], []
        for r in range(args.replicas):
            port = _port()
            out = tmp / f"replica-{r}" / "outputs"
            cmd = [str(BIN / "runbook"), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir", str(out),
                   "--label-map", str(labels), "--queue-max", str(10 * args.alerts), "--max-jobs", str(2 * args.alerts),
                   "--workers", str(args.workers), "--dispatch", "kubernetes", "--job-image", "registry.example.com/mistral-runbooks:0.1.0",
                   "--job-namespace", NS, "--kubeconfig", str(kubeconfig), "-r", "prometheus_url", ""]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / f"serve-{r}.log", "wb")))
            urls.append(f"http://127.0.0.1:{port}")
            outs.append(out)
        try:
            for u in urls:
                assert _wait(lambda u=u: httpx.get(f"{u}/readyz", timeout=1).status_code == 200
                             if _can_connect(u) else False, 60), f"serve at {u} not ready"
            sent: dict[str, float] = {}
            answered_at: dict[str, float] = {}  # its first 200
            codes: list[int] = []

            def send(item: tuple[str, dict[str, Any]], url: str) -> None:
                fp, body = item
                sent.setdefault(fp, time.time())
                codes.append(httpx.post(f"{url}/webhook", json=body, timeout=60).status_code)
                answered_at.setdefault(fp, time.time())

            t0 = time.monotonic()
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda x: send(*x), [(h, u) for h in hooks for u in urls]))
            answered = time.monotonic() - t0
            all_created = _wait(lambda: len(kube.list("batch/v1/jobs", NS)) >= args.alerts, 300)
            burst_s = time.monotonic() - t0
            time.sleep(2)  # late creates of a doubling bug would show here
            creates = [r for r in kube.requests if r["method"] == "POST" and r["path"].endswith(f"/{NS}/jobs")]
            created_at: dict[str, float] = {}
            for r in creates:
                if r["status"] == 201:
                    body = json.loads(r["body"])
                    fp = body["metadata"]["labels"]["mistral-runbooks/fingerprint"]
                    created_at[fp] = min(created_at.get(fp, r["ts"]), r["ts"])
            latencies = [created_at[fp] - sent[fp] for fp in created_at]
            after_accept = [created_at[fp] - answered_at[fp] for fp in created_at]
            jobs = kube.list("batch/v1/jobs", NS)
            per_fp: dict[str, int] = {}
            for j in jobs:
                fp = j["metadata"]["labels"]["mistral-runbooks/fingerprint"]
                per_fp[fp] = per_fp.get(fp, 0) + 1
            incidents = [sum(1 for p in o.iterdir() if p.is_dir() and not p.name.startswith(".")) for o in outs]
            # Alertmanager retries the whole burst: recognised, no new create
            before = len([r for r in kube.requests if r["method"] == "POST" and r["status"] == 201])
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda x: send(*x), [(h, u) for h in hooks for u in urls]))
            time.sleep(2)
            after = len([r for r in kube.requests if r["method"] == "POST" and r["status"] == 201])
            # the Job controller's part (no kubelet here): every Job succeeded; serve records each outcome
            t1 = time.monotonic()
            for j in jobs:
                kube.set_job_status(j["metadata"]["name"], NS, "succeeded")
            drained = _wait(lambda: all(_metric(u, "runbook_serve_spool_jobs") == 0 for u in urls), 300)
            drain_s = time.monotonic() - t1
            recorded = 0
            for o in outs:
                for p in o.iterdir():
                    if p.is_dir() and not p.name.startswith("."):
                        index = json.loads((p / "incident.json").read_text())
                        recorded += (index.get("dispatch") or {}).get("outcome") == "succeeded"
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(60)
    print(f"serve --dispatch kubernetes: {args.alerts} alerts of {args.alerts} services in a burst, "
          f"{args.replicas} replica(s), --workers {args.workers}, each alert posted to every replica (20 client threads)")
    print(f"  webhooks answered: {sorted(set(codes))} in {answered:.2f} s; all Jobs created: {all_created} "
          f"({burst_s:.2f} s after the first POST)")
    if latencies:
        print(f"  dispatch latency (POST sent -> Job create received): p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {_pct(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
        print(f"  of which after the webhook was answered (spooled -> Job create received): p50 "
              f"{statistics.median(after_accept) * 1000:.0f} ms, p99 {_pct(after_accept, 0.99) * 1000:.0f} ms")
    print(f"  Jobs: {len(jobs)}; incidents per replica: {incidents}; Jobs doubled: "
          f"{sum(n - 1 for n in per_fp.values())}; alerts without a Job: {args.alerts - len(per_fp)}")
    print(f"  creates: {sum(r['status'] == 201 for r in creates)} x 201, {sum(r['status'] == 409 for r in creates)} "
          f"x 409 (adopted), other {sum(r['status'] not in (201, 409) for r in creates)}")
    print(f"  retry burst: {after - before} new create(s)")
    print(f"  outcomes recorded: {recorded} of {sum(incidents)} incidents, spool empty: {drained}, "
          f"{drain_s:.2f} s after the Jobs finished")
    return 0


def _can_connect(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
        return True
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
