"""The fault and abuse matrix: headless runs under every fault, bad input, concurrency and kernel death.

1. every simulator mode x Prometheus up/down x cluster up/unreachable/401/403 (64 triage runs):
   a verdict, a complete record, each unavailable section marked so, no run over its bound, no
   write reaching the Kubernetes emulator, no piece of the API key in any record file;
2. malformed parameter sets through the real CLI: refused in the first cell (or before the run
   for an unknown notebook / parameter / a pasted secret), a failed record, nothing written elsewhere;
3. ten concurrent CLI runs: ten distinct complete records;
4. a kernel SIGKILLed mid-run: a prompt non-zero exit naming the dead kernel, the partial record kept;
5. the whole-run deadline (`--run-timeout`): kernel killed, recorded as timed_out.

Totals are printed at the end of the test run (tests/conftest.py, `pytest_terminal_summary`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from matrix_support import (BIN, RECORD_FILES, ROOT, SEVERITIES, StackProcess, add_totals, changed, cli, cli_env,
                            failed_cells, leaks_in, read_json, retarget, snapshot, validation_cell_index,
                            wait_until)
from runbook_lib.record import read_records
from runbook_lib.sim.mistral import MODES

pytestmark = pytest.mark.notebook

TIMEOUT_S = 3.0          # the notebook's per-check bound (timeout_s)
RUN_BOUND_S = 60.0       # the whole-run bound passed to every matrix run (run_timeout_s)
WINDOW = "10s"           # metrics_window: short, so a previous mode's samples age out quickly
POOL = 3                 # headless runs at once inside a test
CLUSTERS = ("up", "unreachable", "expired", "forbidden")
CLUSTER_STATUS = {"up": "ok", "unreachable": "unreachable", "expired": "unauthorized", "forbidden": "forbidden"}
# What the probes of GET /v1/models must conclude, and the decision branch, per simulator mode.
EXPECTED = {
    "ok": ("ok", "resolved"),
    "auth_failure": ("auth_failure", "auth"),
    "rate_limited": ("rate_limited", "rate_limit"),
    "capacity_exceeded": ("capacity_exceeded", "rate_limit"),
    "server_error": ("server_error", "provider_error"),
    "slow": ("ok", "network"),           # answers after 1.5 s: over the 1000 ms latency threshold
    "hang": ("timeout", "network"),      # never answers: every probe ends at timeout_s
    "flaky": (None, None),               # random by design: any verdict, as long as there is one
}
assert set(EXPECTED) == set(MODES), "a simulator mode is missing from the matrix"


@pytest.fixture(scope="module")
def matrix_key() -> Any:
    """One key for the module, in the environment the kernels inherit; no ambient cluster."""
    key = "sim-" + secrets.token_urlsafe(24)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MISTRAL_API_KEY", key)
        mp.delenv("KUBECONFIG", raising=False)
        yield key


@pytest.fixture(scope="module")
def prometheus(require_binary: Any) -> Any:
    """One real Prometheus for the module, re-pointed at each mode's service (see `retarget`)."""
    from runbook_lib.sim.prometheus import LocalPrometheus

    require_binary("prometheus")
    with socket.socket() as s:  # a placeholder target until the first mode's service exists
        s.bind(("127.0.0.1", 0))
        placeholder = f"127.0.0.1:{s.getsockname()[1]}"
    with LocalPrometheus([placeholder], scrape_interval="1s") as prom:
        yield prom


# ---- 1. every mode x Prometheus up/down x cluster up/unreachable/401/403 ---------------------------
def _check_scenario(result: Any, rec: dict[str, Any], mode: str, prom: str, cluster: str, key: str) -> list[str]:
    """Problems with one run's record (empty when all is well)."""
    problems = []
    folder = Path(result.record_dir)
    missing = [f for f in RECORD_FILES if not (folder / f).is_file()]
    if missing:
        problems.append(f"missing {missing}")
    if result.status != "succeeded":
        problems.append(f"status {result.status}: {result.error}")
    if result.duration_s > RUN_BOUND_S or result.run_timeout_s != RUN_BOUND_S:
        problems.append(f"ran {result.duration_s} s against a bound of {result.run_timeout_s}")
    run = read_json(folder / "triage.run.json") if (folder / "triage.run.json").is_file() else {}
    if run.get("status") != "succeeded" or (run.get("verdict") or {}).get("line") != (result.verdict or {}).get("line"):
        problems.append(f"run.json says {run.get('status')} / {(run.get('verdict') or {}).get('line')}")
    verdict = rec.get("verdict") or {}
    if verdict.get("severity") not in SEVERITIES or not verdict.get("branch") or not verdict.get("line"):
        problems.append(f"no complete verdict: {verdict}")
    want_api, want_branch = EXPECTED[mode]
    if want_api and (verdict.get("api_verdict"), verdict.get("branch")) != (want_api, want_branch):
        api, svc = rec.get("mistral_api") or {}, rec.get("service_health") or {}
        problems.append(f"verdict {verdict.get('api_verdict')}/{verdict.get('branch')}, expected {want_api}/{want_branch}"
                        f" (decision: {(rec.get('decision') or {}).get('reason')}; probes' median "
                        f"{api.get('latency_ms_median')} ms, confirmation {api.get('confirmation')}; service "
                        f"{svc.get('status')}, its Mistral calls {svc.get('mistral')})")
    if mode == "slow" and "sent again alone" not in Path(result.notebook_path).read_text("utf-8"):
        problems.append("slow: step 1 does not say the slow burst was sent again alone")
    unavailable = verdict.get("unavailable") or []
    metrics = rec.get("error_rate", {}).get("status")
    if prom == "up" and metrics != "ok":
        problems.append(f"Prometheus up but step 3 is {metrics}: {rec.get('error_rate', {}).get('reason')}")
    if prom == "down" and (metrics != "unavailable" or not any(u.startswith("metrics") for u in unavailable)):
        problems.append(f"Prometheus down but step 3 is {metrics}, unavailable={unavailable}")
    logs = rec.get("error_logs", {}).get("status")
    if logs != CLUSTER_STATUS[cluster]:
        problems.append(f"cluster {cluster} but step 4 is {logs}: {rec.get('error_logs', {}).get('reason')}")
    if cluster != "up" and f"logs (cluster {CLUSTER_STATUS[cluster]})" not in unavailable:
        problems.append(f"cluster {cluster} not marked unavailable in the verdict: {unavailable}")
    if cluster == "up" and any(u.startswith("logs") for u in unavailable):
        problems.append(f"cluster up but marked unavailable: {unavailable}")
    total = rec.get("collection", {}).get("timings_s", {}).get("total_s")
    if total is None or total > TIMEOUT_S + 2.0:
        problems.append(f"checks took {total} s with timeout_s {TIMEOUT_S}")
    leaks = leaks_in(folder, key)
    if leaks:
        problems.append(f"key leaked: {leaks[:5]}")
    return problems


@pytest.mark.xdist_group("matrix-prometheus")
@pytest.mark.parametrize("mode", MODES)
def test_fault_matrix(mode, matrix_key, prometheus, tmp_path, dead_port):
    from runbook_lib.run.execute import run_notebook
    from runbook_lib.sim.kube import KubeEmulator, file_log_source

    log = tmp_path / "service.log"
    opts = {"latency_s": 1.5} if mode == "slow" else {}
    dead = f"http://127.0.0.1:{dead_port}"
    # The simulators in a process of their own: not starved by the three papermill runs in this one.
    with StackProcess(api_key=matrix_key, rate=10.0, log_path=str(log), mode=mode, **opts) as stack, \
            KubeEmulator(log_source=file_log_source(log), api_key=matrix_key) as kube:
        target = stack.service_url.split("://", 1)[1]
        retarget(prometheus, target)
        retargeted = time.monotonic()
        kubeconfigs = {user: str(kube.write_kubeconfig(tmp_path / f"kubeconfig-{user}", user=user))
                       for user in ("ok", "expired", "forbidden")}
        unreachable = tmp_path / "kubeconfig-unreachable"
        unreachable.write_text(Path(kubeconfigs["ok"]).read_text().replace(kube.url, dead))
        kubeconfigs = {"up": kubeconfigs["ok"], "unreachable": str(unreachable), "expired": kubeconfigs["expired"],
                       "forbidden": kubeconfigs["forbidden"]}

        def run(prom: str, cluster: str) -> tuple[str, str, Any]:
            params = {"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                      "prometheus_url": prometheus.url if prom == "up" else dead, "metrics_window": WINDOW,
                      "kubeconfig": kubeconfigs[cluster], "timeout_s": TIMEOUT_S, "samples": 5,
                      "latency_threshold_ms": 1000.0, "incident_id": f"m-{mode}-{prom}-{cluster}",
                      "operator": "matrix"}
            return prom, cluster, run_notebook("triage", params, output_root=tmp_path / "outputs", progress=False,
                                               cell_timeout_s=30, run_timeout_s=RUN_BOUND_S)

        results = []
        with cf.ThreadPoolExecutor(POOL) as pool:
            # Prometheus down first: meanwhile the new target is scraped and the previous mode's
            # samples age out of the 10 s window.
            results += list(pool.map(lambda c: run("down", c), CLUSTERS))
            instance = f'sum(rate(mistral_requests_total{{instance="{target}"}}[5s]))'
            assert prometheus.wait_for_data(instance, timeout_s=30), f"Prometheus never scraped {target}"
            time.sleep(max(0.0, retargeted + 11 - time.monotonic()))
            results += list(pool.map(lambda c: run("up", c), CLUSTERS))
        requests = kube.requests

    failures = []
    for prom, cluster, result in results:
        rec = read_records(result.notebook_path) if Path(result.notebook_path).is_file() else {}
        problems = _check_scenario(result, rec, mode, prom, cluster, matrix_key)
        add_totals("scenario", mode=mode, prom=prom, cluster=cluster, verdict=bool((rec.get("verdict") or {}).get("line")),
                   complete=all((Path(result.record_dir) / f).is_file() for f in RECORD_FILES)
                   and result.status == "succeeded",
                   within_bound=result.duration_s <= RUN_BOUND_S, duration_s=result.duration_s,
                   leaks=len(leaks_in(Path(result.record_dir), matrix_key)), line=result.verdict_line())
        if problems:
            failures.append(f"{mode} / prometheus {prom} / cluster {cluster}: {'; '.join(problems)}")
    unapproved = [r for r in requests if r["method"] != "GET" and not r["dry_run"]]
    add_totals("kube", mode=mode, requests=len(requests), unapproved_writes=len(unapproved))
    assert requests, "the Kubernetes emulator saw no request: step 4 never ran"
    assert not unapproved, f"writes reached the cluster without approval: {unapproved}"
    assert all(r["method"] == "GET" for r in requests), "triage must only read"
    assert not failures, "\n".join(failures)


# ---- 2. malformed parameter sets through the real CLI ----------------------------------------------
HUGE = "x" * 100_000
# (id, extra CLI args, parameter the message must name, fragment of what is accepted)
IN_FIRST_CELL = [
    ("timeout-negative", ["-p", "timeout_s", "-1"], "timeout_s", "seconds > 0"),
    ("timeout-huge", ["-p", "timeout_s", "1e9"], "timeout_s", "<= 120"),
    ("timeout-nan", ["-p", "timeout_s", "nan"], "timeout_s", "seconds > 0"),
    ("timeout-text", ["-r", "timeout_s", "5"], "timeout_s", "seconds > 0"),
    ("timeout-none", ["-p", "timeout_s", "None"], "timeout_s", "seconds > 0"),
    ("samples-zero", ["-p", "samples", "0"], "samples", "whole number from 1 to 20"),
    ("threshold-bool", ["-p", "latency_threshold_ms", "True"], "latency_threshold_ms", "seconds > 0"),
    ("url-ftp", ["-p", "mistral_url", "ftp://example.com"], "mistral_url", "absolute URL with scheme http or https"),
    ("url-no-host", ["-p", "mistral_url", "http://"], "mistral_url", "and a host"),
    ("url-spaces", ["-p", "mistral_url", "http://exa mple.com"], "mistral_url", "absolute URL"),
    ("url-number", ["-p", "mistral_url", "12345"], "mistral_url", "absolute URL"),
    ("url-file", ["-p", "service_health_url", "file:///etc/passwd"], "service_health_url", "or '' to skip"),
    ("url-credentials", ["-p", "prometheus_url", "http://user:pw@prom:9090"], "prometheus_url", "no credentials"),
    ("ns-upper", ["-p", "namespace", "Bad_NS"], "namespace", "DNS-1123"),
    ("ns-trailing-dash", ["-p", "namespace", "prod-"], "namespace", "DNS-1123"),
    ("selector-shell", ["-p", "label_selector", "app=x;rm -rf /"], "label_selector", "label selector"),
    ("window-words", ["-p", "metrics_window", "5 minutes"], "metrics_window", "Prometheus duration"),
    ("env-name-dash", ["-p", "api_key_env", "my-key"], "api_key_env", "name of an environment variable"),
    ("kubeconfig-huge", ["-p", "kubeconfig", "k" * 5000], "kubeconfig", "at most 4096"),
    ("operator-huge", ["-p", "operator", HUGE], "operator", "at most 200"),
    ("operator-newline", ["-p", "operator", "alice\nbob"], "operator", "single line"),
    ("id-traversal", ["-p", "incident_id", "../../etc"], "incident_id", "without '..'"),
    ("id-absolute", ["-p", "incident_id", "/etc/passwd"], "incident_id", "starting with a letter or digit"),
    ("id-empty", ["-p", "incident_id", ""], "incident_id", "1-64 characters"),
    ("id-huge", ["--incident-id", "i" * 5000], "incident_id", "1-64 characters"),
    ("id-flag-traversal", ["--incident-id", "../../../tmp/escape"], "incident_id", "without '..'"),
]
BEFORE_RUN = [  # refused before a kernel starts: exit 2, a record with <name>.run.json only
    ("notebook-unknown", "nope", [], "notebook", "one of"),
    ("notebook-traversal", "../../etc/passwd", [], "notebook", "one of"),
    ("param-unknown", "triage", ["-p", "timeout", "5"], "timeout", "a parameter of notebook 'triage'"),
    ("param-pasted-key", "triage", ["-r", "api_key_env", "{key}"], "api_key_env", "pass its NAME"),
    ("run-timeout-negative", "triage", ["--run-timeout", "-5"], "--run-timeout", "seconds > 0"),
    ("cell-timeout-zero", "triage", ["--cell-timeout", "0"], "--cell-timeout", "seconds > 0"),
]


def _sets_incident_id(args: list[str]) -> bool:
    return "--incident-id" in args or any(a in ("-p", "-r") and args[i + 1] == "incident_id"
                                         for i, a in enumerate(args[:-1]))


def _malformed_case(case: tuple, tmp: Path, key: str, before_run: bool) -> list[str]:
    """Run one case in its own folder; return its problems."""
    if before_run:
        cid, notebook, args, name, fragment = case
        args = [a.replace("{key}", key) for a in args]
    else:
        cid, args, name, fragment = case
        notebook = "triage"
    work = tmp / cid
    work.mkdir()
    repo_outputs = snapshot(ROOT / "outputs")
    before = snapshot(work)
    argv = ["run", notebook, "-q", *args]
    given_id = _sets_incident_id(args)  # every id a case gives is invalid: the folder must not use it
    if not given_id:
        argv += ["--incident-id", "bad"]
    out = cli(argv, cwd=work, env=cli_env(key), timeout=120)
    problems = []
    text = out.stdout + out.stderr
    if out.returncode != (2 if before_run else 1):
        problems.append(f"exit {out.returncode}, expected {2 if before_run else 1}: {text[-600:]}")
    if f"'{name}'" not in out.stdout or fragment not in out.stdout:
        problems.append(f"message does not name '{name}' with '{fragment}': {out.stdout[:400]!r}")
    outputs = work / "outputs"
    folders = [p for p in outputs.iterdir()] if outputs.is_dir() else []
    if len(folders) != 1 or not folders[0].is_dir():
        return problems + [f"expected one record folder, found {folders}"]
    folder = folders[0]
    expected_id = "invalid-incident-id" if given_id else "bad"
    if not re.fullmatch(r"\d{8}T\d{6}Z-" + re.escape(expected_id), folder.name):
        problems.append(f"record folder {folder.name!r} (the incident id must not steer it)")
    new = changed(before, snapshot(work))
    outside = sorted(p for p in new if p != "outputs" and not p.startswith(f"outputs/{folder.name}"))
    if outside:
        problems.append(f"wrote outside its record folder: {outside}")
    if changed(repo_outputs, snapshot(ROOT / "outputs")):
        problems.append(f"wrote into {ROOT / 'outputs'}")
    stem = notebook if re.fullmatch(r"[A-Za-z0-9_-]+", notebook) else "invalid-notebook"
    run_json = folder / f"{stem}.run.json"
    if not run_json.is_file():
        return problems + [f"no {run_json.name} in {sorted(p.name for p in folder.iterdir())}"]
    run = read_json(run_json)
    if run["status"] != "failed" or f"'{name}'" not in (run.get("error") or ""):
        problems.append(f"run.json: {run['status']} / {run.get('error')}")
    if f"record: {run_json}" not in out.stdout and f"record: outputs/{folder.name}" not in out.stdout:
        problems.append(f"the record's path is not printed: {out.stdout[:300]!r}")
    if before_run:
        if (folder / f"{stem}.ipynb").exists():
            problems.append("a notebook ran although the request was refused")
        if not (run.get("error") or "").startswith("rejected before the run started"):
            problems.append(f"run.json error: {run.get('error')}")
    else:
        nb = read_json(folder / "triage.ipynb")
        if nb["metadata"]["runbook"]["status"] != "failed" or nb["metadata"]["papermill"]["exception"] is not True:
            problems.append(f"notebook not marked failed: {nb['metadata'].get('runbook')}")
        want = validation_cell_index(nb)
        if failed_cells(nb) != [want]:
            problems.append(f"failed cells {failed_cells(nb)}, expected only the validation cell {want}")
        elif "triage.start(" not in "".join(nb["cells"][want]["source"]):
            problems.append("the failing cell is not the validation cell")
        errors = [o for o in nb["cells"][want].get("outputs", []) if o["output_type"] == "error"]
        if not errors or errors[0]["ename"] != "ParameterError" or f"'{name}'" not in errors[0]["evalue"]:
            problems.append(f"validation cell error: {errors[:1]}")
        later = [c["metadata"]["papermill"]["status"] for c in nb["cells"][want + 1:] if c["cell_type"] == "code"]
        if any(s != "pending" for s in later):
            problems.append(f"cells after the failure ran: {later}")
        if not (folder / "triage.html").is_file():
            problems.append("no HTML record")
    leaks = leaks_in(work, key)
    if leaks:
        problems.append(f"key leaked: {leaks[:5]}")
    return problems


def test_malformed_parameters_are_refused_with_a_failed_record(tmp_path, matrix_key):
    cases = [(c, False) for c in IN_FIRST_CELL] + [(c, True) for c in BEFORE_RUN]
    assert len(cases) >= 20
    before = snapshot(tmp_path)
    with cf.ThreadPoolExecutor(POOL) as pool:
        outcomes = list(pool.map(lambda cb: (cb[0][0], _malformed_case(cb[0], tmp_path, matrix_key, cb[1])), cases))
    failures = []
    # The whole tree: each case added its working folder, outputs/ and one record folder, nothing else.
    per_case: dict[str, set[str]] = {}
    for path in changed(before, snapshot(tmp_path)):
        parts = Path(path).parts
        if len(parts) >= 3 and parts[1] == "outputs":
            per_case.setdefault(parts[0], set()).add(parts[2])
        elif not (len(parts) == 1 or (len(parts) == 2 and parts[1] == "outputs")):
            failures.append(f"written outside any record folder: {path}")
    failures += [f"{cid}: record folders {sorted(f)}" for cid, f in per_case.items() if len(f) != 1]
    if len(per_case) != len(cases):
        failures.append(f"{len(per_case)} cases left a record folder, of {len(cases)}")
    for cid, problems in outcomes:
        add_totals("malformed", case=cid, ok=not problems, leaks=sum("key leaked" in p for p in problems))
        if problems:
            failures.append(f"{cid}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


# ---- 3. ten concurrent headless runs -----------------------------------------------------------------
def test_ten_concurrent_cli_runs_get_distinct_complete_records(stack, api_key, tmp_path):
    stack.set_mode("rate_limited")
    assert stack.wait_for_service_status({"down"}, timeout_s=10)
    n = 10
    args = ["run", "triage", "-q", "--incident-id", "INC-SAME", "--output-dir", "outputs",
            "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
            "-p", "prometheus_url", "", "-p", "timeout_s", "5", "--run-timeout", "240"]
    env = cli_env(api_key)
    procs = [subprocess.Popen([str(BIN / "runbook"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        outs.append((p.returncode, out, err))
    folders = sorted((tmp_path / "outputs").iterdir())
    printed = [next((ln.split(": ", 1)[1] for ln in o.splitlines() if ln.startswith("record: ")), None)
               for _, o, _ in outs]
    problems = []
    for code, out, err in outs:
        if code != 0:
            problems.append(f"exit {code}: {out[-300:]} {err[-600:]}")
    distinct = 0
    inodes: dict[int, str] = {}
    for folder in folders:
        names = sorted(p.name for p in folder.iterdir())
        run = read_json(folder / "triage.run.json") if (folder / "triage.run.json").is_file() else {}
        nb = read_json(folder / "triage.ipynb") if (folder / "triage.ipynb").is_file() else {}
        ok = (names == sorted(RECORD_FILES) and run.get("status") == "succeeded"
              and Path(tmp_path, run["record_dir"]).resolve() == folder.resolve()
              and Path(tmp_path, run["notebook_path"]).resolve().parent == folder.resolve()
              and nb.get("metadata", {}).get("runbook", {}).get("status") == "succeeded"
              and (run.get("verdict") or {}).get("line", "").startswith("P1 rate limited"))
        for p in folder.iterdir():
            ino = p.stat().st_ino
            if ino in inodes:
                ok = False
                problems.append(f"{p} shares a file with {inodes[ino]}")
            inodes[ino] = str(p)
        distinct += ok
        if not ok:
            problems.append(f"{folder.name}: {names} {run.get('status')} {(run.get('verdict') or {}).get('line')}")
    leaks = sum(len(leaks_in(f, api_key)) for f in folders)
    add_totals("concurrent", runs=n, distinct=distinct if len(folders) == n else 0, leaks=leaks)
    assert len(folders) == n, f"{len(folders)} record folders for {n} runs: {[f.name for f in folders]}"
    assert len({f.name for f in folders}) == n and all(f.name.split("Z-", 1)[1].startswith("INC-SAME") for f in folders)
    assert len(set(printed)) == n and None not in printed, printed
    assert not leaks
    assert not problems and distinct == n, "\n".join(problems)


# ---- 4. the kernel killed mid-run --------------------------------------------------------------------
def _running_cell(folder_root: Path) -> Any:
    """(folder, source of the cell papermill marks running) once a record shows one."""
    for nb_path in folder_root.glob("*/triage.ipynb"):
        try:
            nb = read_json(nb_path)
        except (json.JSONDecodeError, OSError):
            continue  # being written
        for cell in nb["cells"]:
            if cell["metadata"].get("papermill", {}).get("status") == "running":
                return nb_path.parent, "".join(cell["source"])
    return None


def _kernel_of(pid: int) -> Any:
    import psutil

    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any("ipykernel_launcher" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_kernel_killed_mid_run_fails_promptly_and_keeps_the_partial_record(stack, api_key, tmp_path):
    stack.set_mode("hang")
    proc = subprocess.Popen(
        [str(BIN / "runbook"), "run", "triage", "-q", "--incident-id", "INC-KILL", "--run-timeout", "300",
         "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
         "-p", "prometheus_url", "", "-p", "timeout_s", "60"],
        cwd=tmp_path, env=cli_env(api_key), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = wait_until(lambda: (r := _running_cell(tmp_path / "outputs")) and "collect()" in r[1] and r, 60)
        assert running, "the run never reached its collection cell"
        kernel = _kernel_of(proc.pid)
        assert kernel is not None, "no ipykernel child found"
        # the kernel talks over Unix sockets, not 127.0.0.1 ports (no port races between runs)
        connection = read_json(kernel.cmdline()[kernel.cmdline().index("-f") + 1])
        assert connection["transport"] == "ipc" and "runbook-kernel-" in connection["ip"], connection
        kernel.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    folder = running[0]
    run = read_json(folder / "triage.run.json")
    nb = read_json(folder / "triage.ipynb")
    collect = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "run.collect()" in "".join(c["source"]))
    ok = (proc.returncode == 1 and took < 10 and "kernel died" in err.lower() and run["status"] == "failed"
          and "kernel died" in run["error"].lower() and nb["metadata"]["runbook"]["status"] == "failed"
          and failed_cells(nb) == [collect] and (folder / "triage.html").is_file())
    add_totals("kill", ok=ok, leaks=len(leaks_in(folder, api_key)))
    assert proc.returncode == 1, (out, err)
    assert took < 10, f"the run took {took:.1f} s to notice its kernel had died"
    assert "kernel died" in err.lower(), err
    assert run["status"] == "failed" and "kernel died" in run["error"].lower(), run
    assert nb["metadata"]["runbook"]["status"] == "failed" and nb["metadata"]["papermill"]["exception"] is True
    assert failed_cells(nb) == [collect], "the interrupted cell must be the one marked failed"
    assert any(o["output_type"] == "error" for o in nb["cells"][collect]["outputs"])
    after = nb["cells"][collect + 1:]
    assert after and all(c["metadata"]["papermill"]["status"] == "pending" for c in after)
    assert (folder / "triage.html").is_file()
    assert not leaks_in(folder, api_key)


# ---- 5. the whole-run deadline -------------------------------------------------------------------------
def test_run_timeout_kills_the_kernel_and_records_timed_out(stack, api_key, tmp_path):
    import psutil

    stack.set_mode("hang")
    bound = 6
    t0 = time.monotonic()
    out = cli(["run", "triage", "-q", "--incident-id", "INC-DEADLINE", "--run-timeout", str(bound),
               "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
               "-p", "prometheus_url", "", "-p", "timeout_s", "60"], cwd=tmp_path, env=cli_env(api_key), timeout=120)
    took = time.monotonic() - t0
    (folder,) = (tmp_path / "outputs").iterdir()
    run = read_json(folder / "triage.run.json")
    nb = read_json(folder / "triage.ipynb")
    stray = [p for p in psutil.process_iter(["cmdline", "cwd"]) if "ipykernel_launcher" in " ".join(p.info["cmdline"] or [])
             and p.info["cwd"] and Path(p.info["cwd"]).resolve() == folder.resolve()]
    ok = (out.returncode == 1 and run["status"] == "timed_out" and run["duration_s"] <= bound + 3
          and "RunTimeout" in run["error"] and not stray)
    add_totals("run_timeout", ok=ok, leaks=len(leaks_in(folder, api_key)))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "whole run by 6 s" in out.stderr and "timed_out" in out.stderr and "deadline" in out.stderr, out.stderr
    assert run["status"] == "timed_out" and run["run_timeout_s"] == bound, run
    assert "RunTimeout" in run["error"] and "collect()" in run["error"], run["error"]
    assert bound <= run["duration_s"] <= bound + 3, run["duration_s"]
    assert took < bound + 30, took  # kernel start, the deadline, the HTML record
    assert nb["metadata"]["runbook"]["status"] == "timed_out"
    collect = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "run.collect()" in "".join(c["source"]))
    assert failed_cells(nb) == [collect]
    assert (folder / "triage.html").is_file()
    assert not stray, "the killed kernel is still running"
