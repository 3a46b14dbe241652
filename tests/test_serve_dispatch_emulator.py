"""The Kubernetes emulator's batch/v1 Jobs, as serve --dispatch kubernetes needs them, checked with the
real kubectl: create, 409 AlreadyExists on a taken name, the Job registry's restartPolicy check, get,
list by label, delete; and the status a test's stand-in runner writes (`set_job_status`: the emulator
has no Job controller) is one the real `kubectl wait --for=condition=...` understands."""

from __future__ import annotations

import json
import subprocess

import pytest

NS = "jobs-emu"


def _job(name: str, restart: str = "Never") -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "runbook-serve"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": restart, "containers": [
                {"name": "respond", "image": "registry.example.com/mistral-runbooks:0.1.0",
                 "command": ["runbook"], "args": ["respond"]}]}}}}


@pytest.fixture(scope="module")
def kctl(tmp_path_factory: pytest.TempPathFactory):
    from runbook_lib.sim.kube import KubeEmulator

    tmp = tmp_path_factory.mktemp("jobs")
    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")

        def run(*args: str, body: dict | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp / "cache"),
                                   "-n", NS, *args], input=json.dumps(body) if body else None,
                                  capture_output=True, text=True, timeout=60)

        run.kube = kube  # type: ignore[attr-defined]
        yield run


def test_create_conflict_validation_get_list_delete(kctl):
    assert kctl("create", "-f", "-", body=_job("runbook-a")).returncode == 0
    again = kctl("create", "-f", "-", body=_job("runbook-a"))
    assert again.returncode == 1 and "AlreadyExists" in again.stderr and 'jobs.batch "runbook-a" already exists' in again.stderr
    bad = kctl("create", "-f", "-", body=_job("runbook-b", restart="Always"))
    assert bad.returncode == 1 and "spec.template.spec.restartPolicy" in bad.stderr and "Never" in bad.stderr
    assert kctl("create", "-f", "-", body=_job("runbook-c")).returncode == 0
    listed = kctl("get", "jobs", "-l", "app.kubernetes.io/managed-by=runbook-serve", "-o", "name")
    assert listed.stdout.split() == ["job.batch/runbook-a", "job.batch/runbook-c"]
    assert kctl("delete", "job", "runbook-c").returncode == 0
    assert kctl("get", "job", "runbook-c").returncode == 1
    assert kctl("get", "jobs", "-o", "name").stdout.split() == ["job.batch/runbook-a"]


@pytest.mark.parametrize("outcome, condition", [("succeeded", "complete"), ("failed", "failed")])
def test_a_stand_in_runners_status_is_what_kubectl_wait_reads(kctl, outcome, condition):
    name = f"runbook-{outcome}"
    assert kctl("create", "-f", "-", body=_job(name)).returncode == 0
    not_yet = kctl("wait", f"--for=condition={condition}", f"job/{name}", "--timeout=1s")
    assert not_yet.returncode != 0  # nothing runs it: no status, no condition
    kctl.kube.set_job_status(name, NS, "active")
    kctl.kube.set_job_status(name, NS, outcome, *(("DeadlineExceeded", "Job was active longer than specified "
                                                   "deadline") if outcome == "failed" else ()))
    done = kctl("wait", f"--for=condition={condition}", f"job/{name}", "--timeout=10s")
    assert done.returncode == 0 and "condition met" in done.stdout, done.stderr
    status = json.loads(kctl("get", "job", name, "-o", "json").stdout)["status"]
    assert status[outcome] == 1 and "active" not in status and status["startTime"]
    if outcome == "failed":
        assert status["conditions"][-1]["reason"] == "DeadlineExceeded"
    else:
        assert status["completionTime"]
