"""`runbook serve` under a storm (issue 16): figures, no pass/fail.

The real CLI (token on, 2 workers) against the embedded simulators in 5xx mode, fed for `--seconds`:
`--webhooks` Alertmanager webhooks for `--services` services (3 alerts each: a firing group, then
Alertmanager's retries of it, re-notifications with a later startsAt, and resolutions for half the
services), `--malformed` bad requests (not JSON, wrong version, nested 100k deep, a 4,301-digit
number, no alerts, wrong Content-Type, no token, over --max-bytes), and `--slow` clients that drip a
header line every 0.5 s the whole time. Printed: answers by code, incidents and alerts recorded
(against what was sent), drain time (last webhook -> spool empty, no run left), serve's threads and
RSS (peak, sampled every 0.2 s), and how the slow clients ended.

Run: `.venv/bin/python benchmarks/serve_storm.py [--webhooks 200 --seconds 10 --malformed 30 --slow 20]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.sim.stack import EmbeddedStack  # noqa: E402

TOKEN = secrets.token_hex(16)
T0 = "2026-11-23T10:00:00Z"


def _alert(service: int, rule: int, status: str, starts_at: str) -> dict[str, Any]:
    return {"status": status,
            "labels": {"alertname": f"MistralServerErrors{rule}", "severity": "page", "error_class": "provider_error",
                       "cluster": "c1", "namespace": f"ns{service}", "service": f"svc{service}"},
            "annotations": {"summary": "Mistral answers 5xx", "runbook": "diagnose_server_error"},
            "startsAt": starts_at, "endsAt": "2026-11-23T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": f"{service:04x}{rule:04x}5707"}


def _webhook(service: int, status: str, starts_at: str) -> dict[str, Any]:
    return {"version": "4", "groupKey": f'{{}}:{{service="svc{service}"}}', "truncatedAlerts": 0, "status": status,
            "receiver": "runbook-serve", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [_alert(service, r, status, starts_at) for r in range(3)]}


def storm_plan(webhooks: int, services: int) -> tuple[list[dict[str, Any]], int]:
    """The webhooks in order, and how many distinct notifications (alert, status, times) they hold.

    Per service, round r: 0 opens (firing), odd rounds are Alertmanager retrying the previous webhook,
    even rounds re-notify with a later startsAt; even services resolve in their last five rounds.
    """
    plan, distinct, last = [], set(), {}
    rounds = max(1, -(-webhooks // services))
    for k in range(webhooks):
        s, r = k % services, k // services
        if r % 2 == 1:
            body = last[s]
        elif s % 2 == 0 and r >= rounds - 5 and r > 0:
            body = _webhook(s, "resolved", T0)
        else:
            body = _webhook(s, "firing", T0 if r == 0 else f"2026-11-23T10:{r:02d}:00Z")
        last[s] = body
        plan.append(body)
        for a in body["alerts"]:
            distinct.add((a["fingerprint"], a["status"], a["startsAt"], a["endsAt"]))
    return plan, len(distinct)


def malformed(n: int, max_bytes: int) -> list[tuple[bytes, dict[str, str]]]:
    good = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    kinds = [
        (b"{not json", good),
        (json.dumps({**_webhook(0, "firing", T0), "version": "3"}).encode(), good),
        (b"[" * 100_000 + b"]" * 100_000, good),
        (b'{"version": "4", "n": ' + b"7" * 4_301 + b"}", good),
        (json.dumps({**_webhook(0, "firing", T0), "alerts": []}).encode(), good),
        (json.dumps(_webhook(0, "firing", T0)).encode(), {**good, "Content-Type": "text/plain"}),
        (json.dumps(_webhook(0, "firing", T0)).encode(), {"Content-Type": "application/json"}),
        (b" " * (max_bytes + 1), good),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


class Sampler(threading.Thread):
    """serve's threads and RSS, every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.threads: list[int] = []
        self.rss_mb: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.threads.append(self.proc.num_threads())
                self.rss_mb.append(self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.2)


def slow_client(port: int, until: float, outcome: list[str]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            t0, n = time.monotonic(), 0
            while time.monotonic() < until:
                s.sendall(b"X-Drip: %d\r\n" % n)
                n += 1
                s.settimeout(0.5)
                try:
                    if s.recv(4096) == b"":
                        outcome.append(f"closed by serve after {time.monotonic() - t0:.1f} s")
                        return
                    outcome.append("answered")
                    return
                except TimeoutError:
                    continue
            outcome.append("still open at the end")
    except OSError as exc:
        outcome.append(f"closed by serve ({type(exc).__name__})")


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--webhooks", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--malformed", type=int, default=30)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--services", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    max_bytes = 256 * 1024
    plan, distinct = storm_plan(args.webhooks, args.services)
    bad = malformed(args.malformed, max_bytes)
    codes: collections.Counter[str] = collections.Counter()
    slow_outcomes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="serve-storm-") as tmp, \
            EmbeddedStack(api_key="sim-" + secrets.token_urlsafe(16), rate=20.0) as stack:
        stack.set_mode("server_error", status=503)
        outputs = Path(tmp) / "outputs"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [str(Path(sys.executable).parent / "runbook"), "serve", "--listen", f"127.0.0.1:{port}",
               "--output-dir", str(outputs), "--workers", str(args.workers), "--max-bytes", str(max_bytes),
               "-r", "mistral_url", stack.mistral_url, "-r", "service_health_url", stack.service_health_url,
               "-r", "prometheus_url", "", "-p", "timeout_s", "2.0", "-p", "monitor_max_s", "1.0"]
        log = open(Path(tmp) / "serve.log", "wb")
        serve = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                 env={**os.environ, "RUNBOOK_SERVE_TOKEN": TOKEN})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("serve did not become ready:\n" + (Path(tmp) / "serve.log").read_text())
                time.sleep(0.1)
            sampler = Sampler(serve.pid)
            sampler.start()
            threads_idle = psutil.Process(serve.pid).num_threads()
            start = time.monotonic()
            storm_end = start + args.seconds
            slow = [threading.Thread(target=slow_client, args=(port, storm_end + 2, slow_outcomes), daemon=True)
                    for _ in range(args.slow)]
            for t in slow:
                t.start()
            requests: list[tuple[float, bytes, dict[str, str]]] = []
            good = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
            for i, body in enumerate(plan):
                requests.append((start + args.seconds * i / len(plan), json.dumps(body).encode(), good))
            for i, (body, headers) in enumerate(bad):
                requests.append((start + args.seconds * (i + 0.5) / len(bad), body, headers))
            requests.sort(key=lambda r: r[0])

            def send(at: float, body: bytes, headers: dict[str, str]) -> None:
                time.sleep(max(0.0, at - time.monotonic()))
                try:
                    code = httpx.post(f"{url}/webhook", content=body, headers=headers, timeout=60).status_code
                    codes[str(code)] += 1
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1

            with ThreadPoolExecutor(16) as pool:
                for r in requests:
                    pool.submit(send, *r)
            sent_s = time.monotonic() - start
            drain_start = time.monotonic()
            while time.monotonic() - drain_start < 900:
                if (metric(url, "runbook_serve_spool_jobs") == 0 and metric(url, "runbook_serve_runs_running") == 0
                        and metric(url, "runbook_serve_runs_queued") == 0):
                    break
                time.sleep(0.5)
            drain_s = time.monotonic() - drain_start
            for t in slow:
                t.join(10)
            sampler.stop.set()
            sampler.join(5)
            retries = 0.0
            for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
                if line.startswith("runbook_serve_alerts_total{") and 'action="retry"' in line:
                    retries += float(line.split()[-1])
        finally:
            serve.terminate()
            serve.wait(60)
        incidents = [p for p in outputs.iterdir() if p.is_dir() and not p.name.startswith(".")]
        indexes = [json.loads((p / "incident.json").read_text()) for p in incidents]
        recorded = sum(int(h.get("notifications") or 0) for i in indexes for h in (i.get("alert_history") or {}).values())
        statuses = collections.Counter(str(i.get("status")) for i in indexes)
        spool_left = len(list((outputs / ".serve" / "spool").glob("*.json")))
        print(f"storm: {len(plan)} webhooks ({len(plan) * 3} alert notifications, {distinct} distinct), "
              f"{len(bad)} malformed, {args.slow} slow clients, sent in {sent_s:.1f} s; {args.workers} workers")
        print(f"answers by code:     {dict(sorted(codes.items()))}")
        print(f"incidents:           {len(incidents)} (expected {args.services}: one per service); "
              f"statuses {dict(statuses)}")
        print(f"alerts recorded:     {recorded} notifications in incident.json (distinct sent: {distinct}; "
              f"retries recognised: {int(retries)})")
        print(f"drain time:          {drain_s:.1f} s after the last webhook (spool empty, no run left); "
              f"spool files left: {spool_left}")
        print(f"serve threads:       idle {threads_idle}, peak {max(sampler.threads or [0])}")
        print(f"serve RSS:           first {sampler.rss_mb[0] if sampler.rss_mb else 0:.0f} MB, "
              f"peak {max(sampler.rss_mb or [0]):.0f} MB, last {sampler.rss_mb[-1] if sampler.rss_mb else 0:.0f} MB")
        print(f"slow clients:        {dict(collections.Counter(o.split(' after')[0] for o in slow_outcomes))}; "
              f"times: {sorted({o.split('after ')[-1] for o in slow_outcomes if 'after' in o})[:5]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
