"""End to end with `--dispatch kubernetes` (issue 19): alert -> Job -> respond ran -> outcome recorded.

THE EMULATOR HAS NO KUBELET: nothing in it runs a Job's pod. The stand-in runner (test code,
tests/dispatch_support.py) plays kubelet and Job controller: it takes the Job serve created from the
emulator, executes that Job's container command locally (the real `runbook respond` argv from the
Job spec, with only the env the Job names: MISTRAL_API_KEY resolved from the secretKeyRef), and
writes the Job's status from the exit code back into the emulator. serve, a real process, follows
the Job over the Kubernetes API and records the outcome; respond's own record is checked too.
"""

from __future__ import annotations

import json

import pytest

from dispatch_support import StandInRunner, dispatch_args, serve_jobs
from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import alert, folders, free_port, metric, payload, post, start_serve, stop


@pytest.mark.notebook
def test_alert_to_job_to_recorded_outcome_with_a_stand_in_runner(stack, api_key, tmp_path):
    from runbook_lib.sim.kube import KubeEmulator

    stack.set_mode("server_error", status=503)
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    outputs, port, ns = tmp_path / "outputs", free_port(), "dispatch-e2e"
    url = f"http://127.0.0.1:{port}"
    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        proc = start_serve(outputs, stack, port, "--run-timeout", "120", *dispatch_args(kubeconfig, ns))
        try:
            with StandInRunner(kube, ns, secrets={"mistral-api-key/MISTRAL_API_KEY": api_key}) as runner:
                assert post(url, payload(alert("e2e0e2e0e2e0e2e0"))).json()["accepted"] == 1
                assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 150), \
                    (tmp_path / "serve.log").read_text()
            (job,) = serve_jobs(kube, ns)
            name = job["metadata"]["name"]
            assert runner.exit_codes == {name: 0}
            argv = runner.started[name]
            (folder,) = folders(outputs)
            assert argv[1] == "respond" and argv[argv.index("--record-dir") + 1] == str(folder)
            index = read_index(folder) or {}
            # respond's own record, written by the command the Job carried
            assert (folder / "triage.ipynb").is_file() and (folder / "triage.run.json").is_file()
            assert index["status"] == "diagnosed" and index["error_class"] == "provider_error"  # the 503 fault
            assert "503" in index["diagnosis"] and (folder / "diagnose_server_error.ipynb").is_file()
            # serve's record of the Job, from the Job's status as the stand-in wrote it
            d = index["dispatch"]
            assert d["job"] == name and d["created"] is True and d["outcome"] == "succeeded"
            assert d["completion_time"] == job["status"]["completionTime"]
            assert metric(url, "runbook_serve_runs_started_total") == 1
            assert api_key not in json.dumps(job)  # the key reaches the pod from the Secret, never the spec
            assert api_key not in "".join(p.read_text(errors="replace") for p in outputs.rglob("*") if p.is_file())
        finally:
            assert stop(proc) == 0
