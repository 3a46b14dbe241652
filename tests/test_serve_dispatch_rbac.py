"""deploy/kubernetes/rbac-serve-dispatch.yaml: serve's identity for `--dispatch kubernetes` (issue 19).

The real kubectl applies it with --dry-run=server against the Kubernetes emulator. The Role must
grant what serve really does and nothing more: a real serve dispatches one alert against the
emulator, and every API request it made (from the emulator's request log) must be a verb the Role
grants on batch/jobs in the Role's namespace. (The emulator's RBAC is fixed users, not Roles, so the
Role is checked against serve's recorded requests rather than enforced by the emulator.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from dispatch_support import dispatch_args, serve_jobs
from matrix_support import ROOT
from runbook_lib.serve.config import JobSettings
from runbook_lib.sim._http import wait_until
from serve_support import alert, free_port, metric, payload, post, start_serve, stop

RBAC = ROOT / "deploy" / "kubernetes" / "rbac-serve-dispatch.yaml"


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def test_kubectl_accepts_it_against_the_emulator(tmp_path):
    from runbook_lib.sim.kube import KubeEmulator

    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                              "apply", "--dry-run=server", "-f", str(RBAC)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("created (server dry run)") == len(_docs()) == 4, out.stdout


def test_serve_gets_jobs_only_the_runbook_pods_stay_read_only():
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in _docs()}
    sa = kinds["ServiceAccount", "runbook-serve"]
    role = kinds["Role", "runbook-serve-jobs"]
    assert role["metadata"]["namespace"] == sa["metadata"]["namespace"] == JobSettings().namespace
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}]
    binding = kinds["RoleBinding", "runbook-serve-jobs"]
    assert binding["roleRef"]["name"] == "runbook-serve-jobs"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "runbook-serve", "namespace": "mistral-runbooks"}]
    # the Jobs' own ServiceAccount (rbac.yaml) is another one, and it can create nothing
    assert JobSettings().service_account != "runbook-serve"
    for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "rbac.yaml").read_text()):
        if d and d["kind"] == "Role":
            assert {v for r in d["rules"] for v in r["verbs"]} <= {"get", "list", "watch"}


def test_every_request_serve_makes_is_granted_by_the_role(tmp_path: Path):
    from runbook_lib.sim.kube import KubeEmulator

    role = next(d for d in _docs() if d["kind"] == "Role")
    granted = {v for r in role["rules"] for v in r["verbs"]}
    ns = role["metadata"]["namespace"]
    outputs, port = tmp_path / "outputs", free_port()
    url = f"http://127.0.0.1:{port}"
    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        proc = start_serve(outputs, None, port, *dispatch_args(kubeconfig, ns))
        try:
            a = alert("7b7b7b7b7b7b7b7b")
            assert post(url, payload(a)).json()["accepted"] == 1
            assert post(url, payload(a, group_key="{}:{other}")).json()["accepted"] == 1  # recorded, no second Job
            assert wait_until(lambda: len(serve_jobs(kube, ns)) == 1, 20)
            kube.set_job_status(serve_jobs(kube, ns)[0]["metadata"]["name"], ns, "succeeded")
            assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 20)
        finally:
            assert stop(proc) == 0
        resource_requests = [r for r in kube.requests if r["path"].startswith(("/api/v1/", "/apis/"))
                             and r["path"].count("/") >= 4]
    assert resource_requests, "serve made no request at all"
    used = set()
    for r in resource_requests:
        assert r["path"].startswith(f"/apis/batch/v1/namespaces/{ns}/jobs"), r
        named = r["path"] != f"/apis/batch/v1/namespaces/{ns}/jobs"
        verb = {"POST": "create"}.get(r["method"]) or ("watch" if r["query"].get("watch") else "get" if named else "list")
        used.add(verb)
    assert {"create", "list"} <= used <= granted, used
