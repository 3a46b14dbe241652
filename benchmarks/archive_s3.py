"""`runbook list` over the archive on object storage (issue 19) vs the same archive in a local folder.

1. starts moto's S3 server (real HTTP on 127.0.0.1; `moto_server` from the venv) on a free port,
2. writes N incident folders as respond leaves them (benchmarks/evidence.py's make_archive: incident.json,
   triage.run.json and a notebook; the notebook here is ~20 KB, it is never read) and uploads them,
3. times `runbook list --output-dir s3://bench/incidents` (best of R) and counts the requests moto logs,
   beside `runbook list --output-dir LOCAL` over the same folders.

Target (issue 19): 1,000 incidents listed <= 2 s; over object storage one listing (1,000 folders a page)
plus one small object per incident. moto keeps everything in memory on this machine: real S3 adds its
round-trip time per request, and the GETs go 10 at a time (s3fs's batch), so the figure scales with
latency / 10, not with N x latency.

Run: `.venv/bin/python benchmarks/archive_s3.py [--incidents N] [--runs R]`
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _best(args: list[str], env: dict[str, str], runs: int) -> tuple[float, str, float]:
    """Best wall time, the last output line, and the best CPU time of the `runbook` process itself."""
    best, last, cpu = float("inf"), "", float("inf")
    for _ in range(runs):
        c0 = os.times()
        t0 = time.perf_counter()
        done = subprocess.run([str(BIN / "runbook"), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=300)
        best = min(best, time.perf_counter() - t0)
        c1 = os.times()
        cpu = min(cpu, c1.children_user - c0.children_user + c1.children_system - c0.children_system)
        if done.returncode != 0:
            raise SystemExit(f"runbook {' '.join(args)} failed: {done.stderr}")
        last = done.stdout.strip().splitlines()[-1]
    return best, last, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incidents", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    import evidence  # benchmarks/evidence.py: the synthetic archive

    evidence.make_notebook = lambda target_kb=20, _m=evidence.make_notebook: _m(20)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        log = Path(tmp) / "moto.log"
        with open(log, "wb") as fh:
            moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=fh,
                                    stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(150):
                try:
                    urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
                "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(env)
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            local = Path(tmp) / "outputs"
            local.mkdir()
            evidence.make_archive(local, args.incidents)
            from runbook_lib.records import remote

            t0 = time.perf_counter()
            fs = remote.preflight("s3://bench/incidents")
            files = sorted(p for p in local.rglob("*") if p.is_file())
            fs.put([str(p) for p in files], [f"bench/incidents/{p.relative_to(local).as_posix()}" for p in files])
            print(f"uploaded {len(files)} objects ({args.incidents} incidents) in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)

            local_s, local_last, local_cpu = _best(["list", "--output-dir", str(local)], env, args.runs)
            mark = log.stat().st_size
            s3_s, s3_last, s3_cpu = _best(["list", "--output-dir", "s3://bench/incidents"], env, args.runs)
            text = log.read_bytes()[mark:].decode("utf-8", "replace")
            reqs = re.findall(r'"(?:\x1b\[[0-9;]*m)?((?:GET|HEAD|PUT|POST) \S+) HTTP/1\.1', text)
            listings = sum(1 for r in reqs if "list-type=2" in r) // args.runs
            gets = sum(1 for r in reqs if r.split("?", 1)[0].endswith("/incident.json")) // args.runs
            other = len(reqs) // args.runs - listings - gets
        finally:
            moto.terminate()
            moto.wait(timeout=10)
    print(f"runbook list over {args.incidents} incidents (best of {args.runs}):")
    print(f"  local folder:           {local_s:.2f} s, CPU {local_cpu:.2f} s   ({local_last})")
    print(f"  s3:// (moto over HTTP): {s3_s:.2f} s, CPU {s3_cpu:.2f} s of runbook itself (moto's own on the same "
          f"cores)   ({s3_last}); per run {listings} listing request(s), {gets} incident.json GETs, {other} other")
    print(f"  target <= 2 s: {'PASS' if s3_s <= 2 else 'MISS'}")


if __name__ == "__main__":
    main()
