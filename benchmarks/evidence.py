"""Evidence and postmortem speed, measured side by side in one run (figures, ratios, PASS/MISS).

1. generates a realistic JSON-lines log of our service (default 10,000,000 lines: several models,
   mostly 200 with an incident window of 429/503/000 bursts, some plain-text and malformed lines);
2. `logagg.aggregate` per minute/model/code in a child process (wall time including interpreter
   start and the pandas import, peak RSS) vs a `LC_ALL=C grep | awk` pipeline computing the same
   counts (issue 17's target: no slower than the pipeline; the counts must match), and for up to 2M
   lines a plain per-line `json.loads` reading for scale; a plain file this big is counted by one
   worker process per core over byte ranges (logagg.PARALLEL_MIN_BYTES);
3. streaming: the same on a gzip'd copy (one process: a gzip stream cannot be split), and peak RSS
   for N/3 vs N lines (memory must stay flat);
4. `runbook list` over 10,000 synthetic incidents with realistic-size notebooks (target <= 1 s).

Run: `.venv/bin/python benchmarks/evidence.py [--lines N] [--incidents N] [--runs R]`
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GB = 1 << 30
MODELS = ("mistral-small-latest",) * 9 + ("mistral-large-latest",) * 5 + ("codestral-latest",) * 3 + \
    ("mistral-medium-latest",) * 2 + ("mistral-embed",)
MESSAGES = {
    "429": 'mistral error 429: \\"Requests rate limit exceeded\\"',
    "503": "mistral error 503: Service unavailable",
    "000": "ReadTimeout: timed out after 30.0 s (no response)",
    "401": "mistral error 401: Unauthorized",
}
NOISE = [
    "Traceback (most recent call last):",
    '  File "/app/service/client.py", line 212, in call_mistral',
    "httpx.ReadTimeout: timed out",
    "INFO:     Started server process [7]",
    "==== our-service 2.14.1 starting (workers=4, models=5) ====",
]

# The child: the library as an analysis notebook would call it, timed from its own start.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from runbook_lib.sources import logagg
agg = logagg.aggregate(sys.argv[1])
t1 = time.perf_counter()
counts = {f"{b:%Y-%m-%dT%H:%M}\t{m}\t{c}": int(r)
          for b, m, c, r in agg.frame[["bucket", "model", "code", "requests"]].itertuples(index=False)}
with open(sys.argv[2], "w") as fh:
    json.dump({"aggregate_s": t1 - t0, "workers": len(logagg._ranges(sys.argv[1], None)) or 1, "lines": agg.lines, "parsed": agg.parsed, "skipped": agg.skipped_by,
               "groups": len(agg.frame), "counts": counts}, fh)
"""

# The reference a hurried analyst writes: json.loads per line, bucket with fromisoformat.
NAIVE = r"""
import json, sys
from collections import Counter
from datetime import datetime
c = Counter()
with open(sys.argv[1], "rb") as fh:
    for raw in fh:
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        if isinstance(o, dict) and o.get("code") is not None:
            c[(datetime.fromisoformat(o["ts"]).strftime("%Y-%m-%dT%H:%M"), o.get("model"), o["code"])] += 1
"""

AWK = r"""/^\{.*\}$/ {
  if (!match($0, /"ts": "[^"]*"/)) next; ts = substr($0, RSTART + 7, 16)
  if (!match($0, /"model": "[^"]*"/)) next; m = substr($0, RSTART + 10, RLENGTH - 11)
  if (!match($0, /"code": "[^"]*"/)) next; c = substr($0, RSTART + 9, RLENGTH - 10)
  n[ts "\t" m "\t" c]++
}
END { for (k in n) print k "\t" n[k] }"""


# ------------------------------------------------------------------------------------------ the log
def generate_log(path: Path, lines: int, seed: int = 7, rate_per_s: float = 70.0) -> dict[str, int]:
    """Our service's log: one line per call, an incident window 40-55% of the way in, some noise."""
    rnd = random.Random(seed)
    start = 1795420800.0  # 2026-11-23T08:00:00Z
    span = lines / rate_per_s
    inc0, inc1 = start + 0.40 * span, start + 0.55 * span
    kinds = {"request": 0, "reordered": 0, "no_code": 0, "plain": 0, "malformed": 0, "blank": 0}
    last_sec, prefix = -1, ""
    out: list[str] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            t = start + i * span / lines + rnd.random() / rate_per_s
            sec = int(t)
            if sec != last_sec:
                last_sec, prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            ts = f"{prefix}.{int((t - sec) * 1000):03d}Z"
            r = rnd.random()
            if r < 0.0003:
                kinds["plain"] += 1
                out.append(rnd.choice(NOISE))
                continue
            if r < 0.0004:
                kinds["blank"] += 1
                out.append("")
                continue
            if r < 0.0009:
                kinds["no_code"] += 1
                out.append(f'{{"ts": "{ts}", "level": "info", "msg": "rate limiter state: {rnd.randint(0, 99)} '
                           f'tokens", "component": "limiter"}}')
                continue
            model = rnd.choice(MODELS)
            code = "200"
            if inc0 <= t < inc1:
                minute = int((t - inc0) // 60)
                x = rnd.random()
                if model in ("mistral-large-latest", "mistral-small-latest") and minute % 7 < 4 and x < 0.45:
                    code = "429"
                elif minute % 5 == 2 and x < 0.25:
                    code = "503"
                elif 10 <= minute < 13 and x < 0.6:
                    code = "000"
            elif r < 0.0015:
                code = rnd.choice(("429", "503", "401", "000"))
            latency = 2000.0 if code == "000" else round(min(2000.0, max(10.0, rnd.lognormvariate(5.8, 0.8))), 1)
            h = f"{rnd.getrandbits(128):032x}"
            cid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"
            level, msg = ("info", "mistral request ok: 200") if code == "200" else ("error", MESSAGES[code])
            line = (f'{{"ts": "{ts}", "level": "{level}", "msg": "{msg}", "model": "{model}", "code": "{code}", '
                    f'"latency_ms": {latency}, "correlation_id": "{cid}"}}')
            if r < 0.0012:
                kinds["malformed"] += 1
                line = line[: rnd.randrange(20, len(line) - 2)]  # cut mid-write: never ends with "}"
            elif r < 0.0112:
                kinds["reordered"] += 1
                line = json.dumps(dict(reversed(json.loads(line).items())))
            else:
                kinds["request"] += 1
            out.append(line)
            if len(out) >= 50_000:
                fh.write("\n".join(out) + "\n")
                out.clear()
        if out:
            fh.write("\n".join(out) + "\n")
    return kinds


# ------------------------------------------------------------------------------------------ measuring
def run_child(args: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one child process, its own (wait4, not the children total)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{args[:3]} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def ours(path: Path, out: Path, runs: int) -> tuple[float, int, dict]:
    best, rss = math.inf, 0
    for _ in range(runs):
        wall, peak = run_child([sys.executable, "-c", CHILD, str(path), str(out)])
        best, rss = min(best, wall), max(rss, peak)
    return best, rss, json.loads(out.read_text())


def pipeline(path: Path, out: Path, runs: int) -> tuple[float | None, dict[str, int]]:
    if not (shutil.which("grep") and shutil.which("awk") and shutil.which("bash")):
        return None, {}
    cmd = f"LC_ALL=C grep '\"code\"' {path} | LC_ALL=C awk '{AWK}' > {out}"
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", cmd], check=True)
        best = min(best, time.perf_counter() - t0)
    counts = {}
    for row in out.read_text().splitlines():
        key, _, n = row.rpartition("\t")
        counts[key] = int(n)
    return best, counts


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------------------ the archive
def make_notebook(target_kb: int = 200) -> bytes:
    """An executed triage notebook of realistic size: code, tables, a plot as base64 PNG."""
    rnd = random.Random(3)
    cells = []
    for i in range(24):
        outputs = [{"output_type": "stream", "name": "stdout", "text": [f"step {i}: checking ...\n"] * 20}]
        if i % 4 == 0:
            rows = "".join(f"<tr><td>mistral-small-latest</td><td>{rnd.randint(0, 999)}</td></tr>" for _ in range(40))
            outputs.append({"output_type": "display_data", "metadata": {},
                            "data": {"text/html": [f"<table>{rows}</table>"], "text/plain": ["<table>"]}})
        cells.append({"cell_type": "code", "execution_count": i + 1, "id": f"c{i:04d}", "metadata": {"tags": []},
                      "source": [f"result_{i} = runbook_lib.runbooks.steps.step_{i}(params)\n", "show(result)\n"],
                      "outputs": outputs})
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "mistral-runbooks", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    size = len(json.dumps(nb))
    png = "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                  for _ in range(max(0, target_kb * 1024 - size)))
    cells[-1]["outputs"].append({"output_type": "display_data", "metadata": {}, "data": {"image/png": png}})
    return json.dumps(nb, indent=1).encode()


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def make_archive(root: Path, n: int) -> int:
    """`n` incident folders as respond writes them; returns the bytes written."""
    rnd = random.Random(11)
    notebook = make_notebook()
    classes = ("rate_limit", "auth", "provider_error", "network", "our_service")
    total = 0
    t = 1767225600  # 2026-01-01T00:00:00Z
    for i in range(1, n + 1):
        t += rnd.randint(600, 40_000)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
        folder = root / f"{stamp}-INC-{i}"
        folder.mkdir()
        duration = rnd.randint(30, 5000)
        verdict_text = f"rate limited on mistral-large-latest ({rnd.randint(5, 90)}% of calls 429)"
        run = {"notebook": "triage", "status": "succeeded", "record_dir": str(folder),
               "notebook_path": str(folder / "triage.ipynb"), "html_path": str(folder / "triage.html"),
               "started_at": _iso(t), "finished_at": _iso(t + 3), "duration_s": 3.1, "incident_id": f"INC-{i}",
               "verdict": {"summary": verdict_text}, "error": None, "parameters": {"timeout_s": 5.0}}
        index = {"id": f"INC-{i}", "folder": str(folder), "started_at": _iso(t), "finished_at": _iso(t + duration),
                 "status": rnd.choice(("diagnosed", "triaged", "failed")), "severity": rnd.choice(("P1", "P2", "P3")),
                 "error_class": rnd.choice(classes), "verdict": verdict_text,
                 "notebooks": [{"name": "triage", "status": "succeeded", "path": str(folder / "triage.ipynb"),
                                "html": str(folder / "triage.html"), "verdict": verdict_text, "error": None,
                                "duration_s": 3.1}],
                 "changes_applied": [],
                 "postmortem": {"time_to_detect_s": 40, "time_to_mitigate_s": 300, "time_to_resolve_s": duration,
                                "duration_s": duration, "failed_requests": rnd.randint(0, 5000)}}
        for name, data in (("incident.json", json.dumps(index, indent=2).encode()),
                           ("triage.run.json", json.dumps(run, indent=2).encode())):
            (folder / name).write_bytes(data)
            total += len(data)
        # The notebook is the same bytes in every folder: hard links keep a 10,000-incident archive
        # small on disk while every folder still holds a realistic-size notebook to skip over.
        if i == 1:
            (folder / "triage.ipynb").write_bytes(notebook)
            first_notebook = folder / "triage.ipynb"
        else:
            os.link(first_notebook, folder / "triage.ipynb")
        total += len(notebook)
    return total


def runbook_list(root: Path, runs: int) -> tuple[float, str] | None:
    """Best wall time of `runbook list --output-dir ROOT` and its last line, or None if it does not exist."""
    exe = Path(sys.executable).parent / "runbook"
    if not exe.exists():
        return None
    probe = subprocess.run([str(exe), "list", "--help"], capture_output=True, text=True, cwd=ROOT)
    if probe.returncode != 0:
        return None
    best, last = math.inf, ""
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([str(exe), "list", "--output-dir", str(root)], capture_output=True, text=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
        if done.returncode != 0:
            return None
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return best, last


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--incidents", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3, help="best of N for each timed command (default 3)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        tmpd = Path(tmp)
        log = tmpd / "service.jsonl"
        t0 = time.perf_counter()
        kinds = generate_log(log, args.lines)
        gen_s = time.perf_counter() - t0
        print(f"  generated {args.lines:,} lines in {gen_s:.1f} s", file=sys.stderr)

        wall, rss, res = ours(log, tmpd / "ours.json", args.runs)
        pipe_s, pipe_counts = pipeline(log, tmpd / "awk.tsv", args.runs)
        naive_s = naive_rss = None
        if args.lines <= 2_000_000:  # ~4.5 s per million lines: for scale only
            naive_s, naive_rss = run_child([sys.executable, "-c", NAIVE, str(log)])

        gz = tmpd / "service.jsonl.gz"
        with open(log, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        gz_wall, gz_rss, gz_res = ours(gz, tmpd / "gz.json", 1)
        # Memory flat: a third of the log (its first lines) against the whole, same groups mostly.
        third = tmpd / "service-third.jsonl"
        with open(log, "rb") as src, open(third, "wb") as dst:
            for i, line in enumerate(src):
                if i >= args.lines // 3:
                    break
                dst.write(line)
        third_wall, third_rss, third_res = ours(third, tmpd / "third.json", 1)
        third_size = third.stat().st_size
        third.unlink()

        archive = tmpd / "outputs"
        archive.mkdir()
        t0 = time.perf_counter()
        archive_bytes = make_archive(archive, args.incidents)
        print(f"  wrote {args.incidents} incidents in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        listed = runbook_list(archive, args.runs)
        size = log.stat().st_size

    print("\n== evidence / postmortem benchmark ==")
    print(f"log: {args.lines:,} lines, {size / 1e6:.0f} MB ({kinds['request']:,} requests in service key order, "
          f"{kinds['reordered']:,} with keys reordered, {kinds['no_code']} non-request records, {kinds['plain']} "
          f"plain-text, {kinds['malformed']} truncated, {kinds['blank']} blank)")
    print(f"logagg.aggregate: {res['lines']:,} lines, {res['parsed']:,} requests counted, skipped {res['skipped']}, "
          f"{res['groups']:,} (minute, model, code) groups")
    codes: dict[str, int] = {}
    for key, n in res["counts"].items():
        codes[key.rsplit("\t", 1)[1]] = codes.get(key.rsplit("\t", 1)[1], 0) + n
    print("  requests by code: " + ", ".join(f"{c} {n:,}" for c, n in sorted(codes.items())))
    print(f"  wall (child process: interpreter + imports + aggregate), best of {args.runs}: {wall:.2f} s "
          f"(aggregate call alone {res['aggregate_s']:.2f} s; {res.get('workers', '?')} worker process(es))")
    print(f"  peak RSS: {rss / 2**20:.0f} MB   target <= 1024 MB: {verdict(rss <= GB)}")
    if pipe_s is None:
        print("LC_ALL=C grep | awk: not available (grep/awk/bash missing)")
    else:
        match = pipe_counts == res["counts"]
        print(f"LC_ALL=C grep '\"code\"' | awk (same per-minute/model/code counts), best of {args.runs}: "
              f"{pipe_s:.2f} s")
        print(f"  ratio logagg / pipeline: {wall / pipe_s:.2f}x   target <= 1x (no slower): {verdict(wall <= pipe_s)}")
        print(f"  counts match: {'yes' if match else 'no'} ({len(pipe_counts):,} vs {len(res['counts']):,} groups, "
              f"{sum(pipe_counts.values()):,} vs {sum(res['counts'].values()):,} requests)")
    if naive_s is not None and naive_rss is not None:
        print(f"plain json.loads + fromisoformat per line (for scale): {naive_s:.2f} s, "
              f"peak RSS {naive_rss / 2**20:.0f} MB -> logagg is {naive_s / wall:.1f}x faster")
    print("streaming:")
    print(f"  gzip'd copy ({gz.name}, {gz_res['lines']:,} lines): {gz_wall:.2f} s, peak RSS {gz_rss / 2**20:.0f} MB, "
          f"counts equal to plain: {'yes' if gz_res['counts'] == res['counts'] else 'no'}")
    print(f"  peak RSS {third_res['lines']:,} lines ({third_size / 1e6:.0f} MB): {third_rss / 2**20:.0f} MB   vs   "
          f"{args.lines:,} lines ({size / 1e6:.0f} MB): {rss / 2**20:.0f} MB "
          f"-> ratio {rss / third_rss:.2f} for 3x the input ({third_wall:.2f} s for the third)")
    print(f"runbook list over {args.incidents} incidents ({archive_bytes / 1e6:.0f} MB on disk, ~"
          f"{archive_bytes / args.incidents / 1024:.0f} KB each incl. triage.ipynb):")
    if listed is None:
        print("  runbook list: not available")
    else:
        print(f"  `runbook list --output-dir ROOT`, best of {args.runs}: {listed[0]:.2f} s   target <= 1 s: "
              f"{verdict(listed[0] <= 1)}   (last line: {listed[1]!r})")


if __name__ == "__main__":
    main()
