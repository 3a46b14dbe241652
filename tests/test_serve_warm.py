"""Issue 17: `runbook serve --warm N` hands incidents to pre-started responders (runbook_lib/run/standby.py).

Real `runbook serve`, real standby processes and kernels, real respond runs against the embedded
simulators. Proved: a run through a standby leaves the same record as a cold run of the same serve
(same files, same run.json keys, same notebook cells and execution counts); every run gets its own
kernel, never one used before; a standby whose kernel died is replaced and the incidents still run;
the standbys never see serve's token; stop leaves no standby or kernel behind."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import psutil
import pytest

from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import (alert, folders, free_port, kill_respond_processes, payload, post, standby_processes,
                           start_serve, stop)

pytestmark = pytest.mark.notebook

READY = re.compile(r"standby pid (\d+): kernel pid (\d+) ready")
HANDED = re.compile(r"(\S+): respond handed to standby pid (\d+) \(kernel pid (\d+)")
TOKEN = "planted-serve-token-" + "7f3a9c"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ready(outputs: Path) -> list[tuple[int, int]]:
    log = outputs / ".serve" / "standby.log"
    return [(int(a), int(b)) for a, b in READY.findall(log.read_text())] if log.exists() else []


def _shape(folder: Path) -> dict[str, object]:
    """What must be the same in a warm and a cold record: file names (timestamps masked), run.json keys,
    and each notebook's cells (type, source, execution count; the parameters cell differs by incident)."""
    files = sorted(re.sub(r"\d{8}T\d{6}Z", "<ts>", p.name) for p in folder.iterdir())
    runs = {p.name: sorted(json.loads(p.read_text())) for p in folder.glob("*.run.json")}
    cells = {}
    for nb_path in folder.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        cells[nb_path.name] = [(c["cell_type"], c.get("execution_count"),
                                "" if "parameters" in " ".join(c.get("metadata", {}).get("tags", []))
                                or c.get("metadata", {}).get("tags") == ["runbook-banner"] else "".join(c["source"]),
                                [o.get("output_type") for o in c.get("outputs", [])])
                               for c in nb["cells"]]
    index = sorted(read_index(folder) or {})
    return {"files": files, "runs": runs, "cells": cells, "index": index}


def test_warm_runs_match_a_cold_run_each_on_its_own_kernel_and_stop_leaves_nothing(stack, tmp_path):
    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNBOOK_SERVE_TOKEN": TOKEN}
    seen_kernels: set[int] = set()
    try:
        proc = start_serve(outputs, stack, port, "--warm", "2", "--workers", "3", env=env)
        assert wait_until(lambda: len(_ready(outputs)) >= 2, 120), (outputs / ".serve" / "standby.log").read_text()
        first = _ready(outputs)
        seen_kernels |= {k for _, k in first}
        # the standbys never see serve's token, nor any parameter on their command line
        for p in standby_processes(str(outputs)):
            assert "RUNBOOK_SERVE_TOKEN" not in p.environ() and TOKEN not in " ".join(p.cmdline())
            assert stack.mistral_url not in " ".join(p.cmdline())

        # a standby whose kernel dies is replaced (a new standby, a new kernel)
        dead_standby, dead_kernel = first[0]
        psutil.Process(dead_kernel).kill()
        assert wait_until(lambda: len(_ready(outputs)) >= 3, 120), (outputs / ".serve" / "standby.log").read_text()
        assert wait_until(lambda: not _alive(dead_standby), 20)
        serve_log = (tmp_path / "serve.log").read_text()
        assert f"standby pid {dead_standby} exited 3; replaced" in serve_log, serve_log
        standbys_now = {s for s, _ in _ready(outputs)} - {dead_standby}
        kernels_now = {k for _, k in _ready(outputs)} - {dead_kernel}
        assert wait_until(lambda: len({p.pid for p in standby_processes(str(outputs))} & standbys_now) == 2, 30)

        # three alerts of three services at once: two standbys take two, the third starts cold
        bodies = [payload(alert(f"a{i}b{i}c{i}d{i}", service=f"svc{i}"), group_key=f'{{}}:{{service="svc{i}"}}')
                  for i in range(3)]
        answers: list[int] = []
        threads = [threading.Thread(target=lambda b: answers.append(
            post(url, b, {"Authorization": f"Bearer {TOKEN}"}).json().get("accepted", -1)), args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [1, 1, 1], (answers, (tmp_path / "serve.log").read_text()[-1500:])
        assert wait_until(lambda: len(folders(outputs)) == 3 and all(
            (read_index(f) or {}).get("status") in ("diagnosed", "triaged", "failed", "mitigated")
            for f in folders(outputs)), 240), [read_index(f) for f in folders(outputs)]
        serve_log = (tmp_path / "serve.log").read_text()
        handed = HANDED.findall(serve_log)
        assert len(handed) == 2, serve_log
        handed_kernels = {int(k) for _, _, k in handed}
        assert handed_kernels == kernels_now  # the two ready kernels, one per run
        assert dead_kernel not in handed_kernels
        # each kernel was used by one run only and is gone with it
        assert wait_until(lambda: not any(_alive(k) for k in handed_kernels), 20)
        by_id = {(read_index(f) or {}).get("id"): f for f in folders(outputs)}
        warm = [by_id[i] for i, _, _ in handed]
        cold = [f for f in folders(outputs) if f not in warm]
        assert len(warm) == 2 and len(cold) == 1, (by_id, handed)
        for f in [*warm, *cold]:
            index = read_index(f) or {}
            assert index["status"] == "diagnosed" and index["error_class"] == "provider_error", index
        cold_shape = _shape(cold[0])
        assert cold_shape["cells"] and cold_shape["runs"]  # something to compare
        for f in warm:
            assert _shape(f) == cold_shape
            assert (f / "respond.log").read_text().count("incident: ") == 1  # respond's own output, in its log
        # a triage record is executed in its own folder (the kernel's cwd was moved there)
        for f in [*warm, *cold]:
            assert json.loads((f / "triage.run.json").read_text())["record_dir"] == str(f)

        seen_kernels |= {k for _, k in _ready(outputs)}
        standbys = {s for s, _ in _ready(outputs)}
        assert stop(proc) == 0
        # nothing left: no standby, no kernel any standby started
        assert wait_until(lambda: not standby_processes(str(outputs)), 20), standby_processes(str(outputs))
        left = [k for k in seen_kernels | standbys if _alive(k)]
        assert not left, left
    finally:
        kill_respond_processes(str(outputs))


def test_kill_9_of_serve_ends_its_idle_standbys_and_their_kernels(tmp_path):
    """No worse than without a pool: standbys with no job end when serve is SIGKILLed (their socket's EOF)."""
    outputs = tmp_path / "outputs"
    port = free_port()
    try:
        proc = start_serve(outputs, None, port, "--warm", "2")
        assert wait_until(lambda: len(_ready(outputs)) >= 2, 120), (outputs / ".serve" / "standby.log").read_text()
        pids = [pid for pair in _ready(outputs) for pid in pair]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not [p for p in pids if _alive(p)], 30), pids
    finally:
        kill_respond_processes(str(outputs))


def test_a_prepared_kernel_that_died_before_its_run_is_replaced_by_a_cold_one(tmp_path):
    """The race the standby's own watch cannot close (the kernel dies after the job arrived): the run's
    bind finds it gone, discards it, and the triage runs on a cold kernel, recorded as usual."""
    from runbook_lib.run.catalog import resolve_notebook
    from runbook_lib.run.execute import run_notebook
    from runbook_lib.run.kernel import notebook_kernel_name
    from runbook_lib.run.prepared import PreparedKernel, claim, offer

    prepared = PreparedKernel(notebook_kernel_name(resolve_notebook("triage"), None))
    prepared.start()
    try:
        prepared.wait_ready()
        dead = prepared.pid
        psutil.Process(dead).kill()
        assert wait_until(lambda: not prepared.alive(), 10)
        offer(prepared)
        result = run_notebook("triage", {"mistral_url": "http://127.0.0.1:9", "service_health_url": "http://127.0.0.1:9",
                                         "prometheus_url": "", "timeout_s": 1.0},
                              output_root=tmp_path, progress=False)
        assert claim(prepared.kernel_name) is None  # taken by that run, never offered again
        assert result.ok and result.verdict and "refused" in result.verdict["line"], result
        assert not prepared.scratch.exists()  # discarded
        nb = json.loads(Path(result.notebook_path).read_text())
        assert [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"][0] == 1
    finally:
        prepared.discard()


def test_kill_9_of_serve_mid_warm_run_then_restart_adopts_the_standby_run(stack, tmp_path):
    """The crash/adopt guarantee holds for a run handed to a standby: it holds the incident's run lock, outlives
    a SIGKILLed serve, and the next serve adopts it (no second run) and records its outcome."""
    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    outputs = tmp_path / "outputs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    slow = ("-p", "monitor_max_s", "8.0")  # the recovery watch keeps the run going past the restart
    try:
        proc = start_serve(outputs, stack, port, "--warm", "1", *slow)
        assert wait_until(lambda: len(_ready(outputs)) >= 1, 120), (outputs / ".serve" / "standby.log").read_text()
        (standby, kernel), = _ready(outputs)
        assert post(url, payload(alert("a0a0b1b1"))).json()["accepted"] == 1
        assert wait_until(lambda: len(folders(outputs)) == 1
                          and (read_index(folders(outputs)[0]) or {}).get("status") == "running", 60)
        folder = folders(outputs)[0]
        assert wait_until(lambda: "respond handed to standby pid" in (tmp_path / "serve.log").read_text(), 20)
        assert f"standby pid {standby} (kernel pid {kernel}" in (tmp_path / "serve.log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _alive(standby), "the handed standby should outlive serve (own session, holding the run lock)"

        proc = start_serve(outputs, stack, port, "--warm", "0", *slow)
        assert wait_until(lambda: (read_index(folder) or {}).get("status") in ("diagnosed", "triaged", "failed"),
                          120), read_index(folder)
        assert stop(proc) == 0
        index = read_index(folder) or {}
        assert index["status"] == "diagnosed" and index["error_class"] == "provider_error", index
        log = (tmp_path / "serve.log").read_text()
        assert f"respond pid {standby} from a previous serve still runs" in log and "adopting it" in log, log
        assert (folder / "respond.log").read_text().count("incident: ") == 1  # one respond, into this folder
        assert folders(outputs) == [folder]
        assert not _alive(standby) and not _alive(kernel)
    finally:
        kill_respond_processes(str(outputs))


def test_a_preloaded_kernel_has_the_runbook_imported_binds_no_name_and_runs_the_triage_as_a_cold_one(tmp_path):
    """preload imports the triage's modules in the waiting kernel (CPU spent before the incident), binding
    no name: the run's namespace and execution counts are a cold kernel's, its record the same in form."""
    from runbook_lib.run.catalog import resolve_notebook
    from runbook_lib.run.execute import run_notebook
    from runbook_lib.run.kernel import notebook_kernel_name
    from runbook_lib.run.prepared import PRELOAD, PreparedKernel, offer

    prepared = PreparedKernel(notebook_kernel_name(resolve_notebook("triage"), None))
    prepared.start()
    try:
        prepared.wait_ready()
        assert prepared.preload("triage")
        probe = tmp_path / "probe.json"
        # a silent look inside (binds nothing either): what is imported, which names the user sees
        from jupyter_core.utils import run_sync

        code = (f"__import__('pathlib').Path({str(probe)!r}).write_text(__import__('json').dumps("
                "{'modules': sorted(__import__('sys').modules), 'names': sorted(k for k in globals() "
                "if not k.startswith('_'))}))")
        assert run_sync(prepared._execute)(code, 10)
        seen = json.loads(probe.read_text())
        assert set(PRELOAD["triage"]) <= set(seen["modules"])
        assert "runbook_lib" not in seen["names"] and "httpx" not in seen["names"], seen["names"]
        offer(prepared)
        result = run_notebook("triage", {"mistral_url": "http://127.0.0.1:9", "service_health_url": "http://127.0.0.1:9",
                                         "prometheus_url": "", "timeout_s": 1.0},
                              output_root=tmp_path / "out", progress=False)
        assert prepared.used and result.ok and "refused" in result.verdict["line"], result
        nb = json.loads(Path(result.notebook_path).read_text())
        counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
        assert counts == list(range(1, len(counts) + 1))  # the silent executions left no count
    finally:
        prepared.discard()


def test_the_prompt_client_waits_for_a_live_kernel_and_refuses_a_dead_one(tmp_path):
    """kernel.prompt_client_class: ready once the kernel answered (no 0.2 s IOPub flush), and a kernel that
    died is an error naming it, as jupyter_client's own wait says, not a hang."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    from runbook_lib.run.kernel import RunKernel

    kernel = RunKernel(AsyncKernelManager, "python3", tmp_path)
    kernel.start()
    try:
        kc = kernel.km.client()
        assert type(kc).__name__ == "PromptKernelClient"
        kc.start_channels()
        run_sync(kc.wait_for_ready)(30)
        msg_id = kc.execute("1 + 1", silent=True)  # nothing stale on the shell channel: the next reply is ours
        assert run_sync(kc.get_shell_msg)(timeout=10)["parent_header"]["msg_id"] == msg_id
        psutil.Process(kernel.km.provisioner.process.pid).kill()
        assert wait_until(lambda: kernel.km.provisioner.process.poll() is not None, 10)
        with pytest.raises(RuntimeError, match="died"):
            run_sync(kc.wait_for_ready)(10)
    finally:
        kernel.stop()


PRELOAD_CHECK = r"""
import importlib, json, sys
from runbook_lib.run.prepared import PRELOAD
import IPython  # what a kernel has before any cell
for m in PRELOAD["triage"]:
    importlib.import_module(m)
mistral_url, health_url = sys.argv[1], sys.argv[2]
nb = json.load(open("notebooks/triage.ipynb"))
code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
ns = {}
exec(code[0], ns)
ns.update(mistral_url=mistral_url, service_health_url=health_url, prometheus_url="", timeout_s=2.0)
before = set(sys.modules)
for c in code[1:]:
    exec(c, ns)
print(json.dumps(sorted(m for m in set(sys.modules) - before
                        if m.split(".")[0] in ("runbook_lib", "httpx", "httpcore", "anyio"))))
"""


def test_the_preload_covers_what_a_5xx_triage_imports(stack):
    """prepared.PRELOAD is the triage's imports: after it, a triage on a 5xx incident imports none of ours or
    httpx's (in a fresh interpreter, so nothing imported by other tests hides a gap)."""
    import subprocess
    import sys

    stack.set_mode("server_error", status=503)
    done = subprocess.run([sys.executable, "-c", PRELOAD_CHECK, stack.mistral_url, stack.service_health_url],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
