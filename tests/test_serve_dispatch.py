"""`runbook serve --dispatch kubernetes` (issue 19): one Job per incident, never two, outcome recorded.

Real `runbook serve` processes talk to the Kubernetes emulator over HTTPS with the official client.
The emulator has NO kubelet and no Job controller: Jobs are only stored. Where a Job must end, the
test's stand-in runner (tests/dispatch_support.py) writes its status into the emulator the way the
Job controller would (here without running anything: what serve records must follow that status);
tests/test_serve_dispatch_e2e.py executes the Job's real `runbook respond` command instead. Each
Job's spec is also validated by the real `kubectl apply --dry-run=server` against the emulator.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dispatch_support import StandInRunner, dispatch_args, serve_jobs
from runbook_lib.records.incident import read_index
from runbook_lib.sim._http import wait_until
from serve_support import alert, folders, free_port, metric, payload, post, start_serve, stop

SERVICES = ["checkout", "search", "billing", "chat", "ledger"]
TOKEN = "serve-token-planted-0d1e5ec7a1b2"
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from runbook_lib.sim.kube import KubeEmulator

    with KubeEmulator(api_key="x") as k:
        k.kubeconfig_path = k.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
        yield k


def _label_map(tmp_path: Path) -> Path:
    path = tmp_path / "labels.yml"
    path.write_text(yaml.safe_dump({"service_labels": ["service"],
                                    "parameters": {"namespace": "{service}-prod", "label_selector": "app={service}"}}))
    return path


def _alerts() -> list[dict[str, Any]]:
    return [alert(hashlib.md5(s.encode()).hexdigest()[:16], service=s, starts_at=f"2026-11-23T10:0{i}:00Z")
            for i, s in enumerate(SERVICES)]


def _post_all(url: str, items: list[dict[str, Any]], headers: dict[str, str]) -> list[int]:
    """One webhook per alert, all at once (one thread each)."""
    codes: list[int] = []
    threads = [threading.Thread(target=lambda a=a: codes.append(post(url, payload(a), headers).status_code))
               for a in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return codes


def _expected_name(fp: str, starts_at: str) -> str:
    return "runbook-" + hashlib.sha256(f"{fp}\n{starts_at}".encode()).hexdigest()[:16]


def _creates(kube: Any, namespace: str) -> list[int]:
    """Statuses of every POST of a Job into `namespace` the emulator answered."""
    return [r["status"] for r in kube.requests if r["method"] == "POST" and r["path"] ==
            f"/apis/batch/v1/namespaces/{namespace}/jobs" and not r["dry_run"]]


def _index_by_fp(outputs: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for f in folders(outputs):
        index = read_index(f) or {}
        out[(index.get("alert") or {}).get("fingerprint")] = {**index, "_folder": f}
    return out


def test_n_alerts_n_jobs_with_the_right_spec_retries_add_none_outcomes_from_job_status(kube, tmp_path, monkeypatch):
    ns = "dispatch-spec"
    monkeypatch.setenv("RUNBOOK_SERVE_TOKEN", TOKEN)
    outputs, port = tmp_path / "outputs", free_port()
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    items = _alerts()
    proc = start_serve(outputs, None, port, "--label-map", str(_label_map(tmp_path)), "--run-timeout", str(RUN_TIMEOUT),
                       *dispatch_args(kube.kubeconfig_path, ns, "--job-ttl", "3600"))
    try:
        assert _post_all(url, items, auth) == [200] * len(items)
        assert wait_until(lambda: len(serve_jobs(kube, ns)) == len(items), 30), serve_jobs(kube, ns)
        assert wait_until(lambda: all((i.get("dispatch") or {}).get("job") for i in _index_by_fp(outputs).values()), 15)
        jobs = {j["metadata"]["name"]: j for j in serve_jobs(kube, ns)}
        indexes = _index_by_fp(outputs)
        assert len(indexes) == len(items)
        for a in items:
            fp, service = a["fingerprint"], a["labels"]["service"]
            index = indexes[fp]
            job = jobs[_expected_name(fp, a["startsAt"])]  # the name is the alert episode's, on any replica
            meta, spec = job["metadata"], job["spec"]
            pod = spec["template"]["spec"]
            (c,) = pod["containers"]
            assert meta["namespace"] == ns
            assert meta["labels"]["mistral-runbooks/incident"] == index["id"]
            assert meta["labels"]["mistral-runbooks/fingerprint"] == fp
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "runbook-serve"
            assert pod["serviceAccountName"] == "mistral-runbooks" and pod["restartPolicy"] == "Never"
            assert spec["activeDeadlineSeconds"] == RUN_TIMEOUT and spec["backoffLimit"] == 0
            assert spec["ttlSecondsAfterFinished"] == 3600
            assert c["image"] == "registry.example.com/mistral-runbooks:0.1.0" and c["command"] == ["runbook"]
            args = c["args"]
            assert args[0] == "respond" and args[args.index("--incident-id") + 1] == index["id"]
            assert args[args.index("--record-dir") + 1] == f"{outputs}/{index['_folder'].name}"
            pairs = {args[i + 1]: args[i + 2] for i, v in enumerate(args) if v in ("-r", "-p")}
            assert pairs["namespace"] == f"{service}-prod" and pairs["label_selector"] == f"app={service}"
            assert float(args[args.index("--run-timeout") + 1]) < RUN_TIMEOUT  # respond ends before the pod's deadline
            assert "apply_changes" not in pairs
            assert c["env"] == [{"name": "MISTRAL_API_KEY",
                                 "valueFrom": {"secretKeyRef": {"name": "mistral-api-key", "key": "MISTRAL_API_KEY"}}}]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound])
            assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
            assert TOKEN not in json.dumps(job)
            assert index["dispatch"]["job"] == meta["name"] and index["dispatch"]["created"] is True
            assert index["status"] == "running"
        # what serve sent, as a manifest, is accepted by the real kubectl against the API (server dry run)
        manifest = tmp_path / "jobs.yaml"
        manifest.write_text(yaml.safe_dump_all([{"apiVersion": j["apiVersion"], "kind": j["kind"],
                                                 "metadata": {k: j["metadata"][k] for k in ("name", "labels", "annotations")},
                                                 "spec": j["spec"]} for j in jobs.values()]))
        out = subprocess.run(["kubectl", "--kubeconfig", str(kube.kubeconfig_path), "--cache-dir", str(tmp_path / "kc"),
                              "apply", "--dry-run=server", "-n", ns, "-f", str(manifest)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("configured (server dry run)") + out.stdout.count("unchanged (server dry run)") \
            == len(items), out.stdout

        # Alertmanager retrying every webhook (recognised), and each alert notified again through another
        # group (recorded in its history): no new Job, no create
        assert _post_all(url, items, auth) == [200] * len(items)
        for a in items:
            assert post(url, payload(a, group_key='{}:{service="other-route"}'), auth).json()["accepted"] == 1
        assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == len(items), 15)
        assert _creates(kube, ns) == [201] * len(items)
        assert len(serve_jobs(kube, ns)) == len(items)

        # the Job controller's verdicts (written by the stand-in): serve records each from the Job's status
        names = [_expected_name(a["fingerprint"], a["startsAt"]) for a in items]
        for name in names[:3]:
            kube.set_job_status(name, ns, "succeeded")
        for name in names[3:]:
            kube.set_job_status(name, ns, "failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 30)
        indexes = _index_by_fp(outputs)
        for i, a in enumerate(items):
            index, ok = indexes[a["fingerprint"]], i < 3
            assert index["dispatch"]["outcome"] == ("succeeded" if ok else "failed")
            assert index["status"] == ("completed" if ok else "failed")
            if not ok:
                assert "DeadlineExceeded" in index["dispatch"]["reason"] and "DeadlineExceeded" in index["error"]
            assert index["alert_history"][a["fingerprint"]]["notifications"] == 2  # first + re-notification
        assert metric(url, "runbook_serve_runs_started_total") == len(items)
        assert metric(url, "runbook_serve_runs_failed_total") == 2
    finally:
        assert stop(proc) == 0
    assert TOKEN not in "".join(p.read_text(errors="replace") for p in outputs.rglob("*") if p.is_file())


def test_two_serves_on_two_state_dirs_one_job_per_incident_both_record_it(kube, tmp_path):
    ns = "dispatch-two"
    items = _alerts()[:4]
    procs, urls, outs = [], [], []
    try:
        for side in ("a", "b"):
            port = free_port()
            outs.append(tmp_path / side / "outputs")
            urls.append(f"http://127.0.0.1:{port}")
            procs.append(start_serve(outs[-1], None, port, "--label-map", str(_label_map(tmp_path)),
                                     *dispatch_args(kube.kubeconfig_path, ns), log=tmp_path / f"{side}.log"))
        threads = [threading.Thread(target=_post_all, args=(u, items, {})) for u in urls]  # both replicas at once
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert wait_until(lambda: all(len([i for i in _index_by_fp(o).values() if (i.get("dispatch") or {}).get("job")])
                                      == len(items) for o in outs), 30)
        assert len(serve_jobs(kube, ns)) == len(items)
        assert sorted(_creates(kube, ns)) == [201] * len(items) + [409] * len(items)
        a_idx, b_idx = _index_by_fp(outs[0]), _index_by_fp(outs[1])
        for it in items:
            da, db = a_idx[it["fingerprint"]]["dispatch"], b_idx[it["fingerprint"]]["dispatch"]
            assert da["job"] == db["job"] and {da["created"], db["created"]} == {True, False}
        with StandInRunner(kube, ns, execute=False, outcome="succeeded"):
            assert wait_until(lambda: all(metric(u, "runbook_serve_spool_jobs") == 0 for u in urls), 30)
        for o in outs:
            assert {i["dispatch"]["outcome"] for i in _index_by_fp(o).values()} == {"succeeded"}
        assert len(serve_jobs(kube, ns)) == len(items)
    finally:
        for p in procs:
            stop(p)


def test_restart_mid_run_adopts_the_job_never_creates_a_second(kube, tmp_path):
    ns = "dispatch-restart"
    outputs, port = tmp_path / "outputs", free_port()
    url = f"http://127.0.0.1:{port}"
    (a,) = _alerts()[:1]
    args = ("--label-map", str(_label_map(tmp_path)), *dispatch_args(kube.kubeconfig_path, ns))
    proc = start_serve(outputs, None, port, *args)
    try:
        assert post(url, payload(a)).json()["accepted"] == 1
        assert wait_until(lambda: len(serve_jobs(kube, ns)) == 1, 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start_serve(outputs, None, port, *args, log=tmp_path / "again.log")
        assert wait_until(lambda: metric(url, "runbook_serve_runs_adopted_total") == 1, 20), \
            (tmp_path / "again.log").read_text()
        assert _creates(kube, ns) == [201, 409] and len(serve_jobs(kube, ns)) == 1
        assert f"1 of serve's Jobs in namespace {ns}, 1 unfinished" in (tmp_path / "again.log").read_text()
        assert metric(url, "runbook_serve_runs_started_total") == 0
        kube.set_job_status(serve_jobs(kube, ns)[0]["metadata"]["name"], ns, "succeeded")
        assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 20)
        (index,) = _index_by_fp(outputs).values()
        assert index["dispatch"]["outcome"] == "succeeded" and index["dispatch"]["adopted"] is True
        assert len(folders(outputs)) == 1
    finally:
        stop(proc)


def test_api_unreachable_alert_stays_spooled_readyz_says_why_then_retried(kube, tmp_path):
    ns = "dispatch-down"
    outputs, port = tmp_path / "outputs", free_port()
    url = f"http://127.0.0.1:{port}"
    (a,) = _alerts()[1:2]
    proc = start_serve(outputs, None, port, *dispatch_args(kube.kubeconfig_path, ns))
    try:
        kube.set_mode("hang")  # the API server accepts connections and never answers
        assert post(url, payload(a)).json()["accepted"] == 1
        assert wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 503, 30)
        problems = " ".join(httpx.get(f"{url}/readyz", timeout=5).json()["problems"])
        assert "Kubernetes Jobs cannot be created" in problems and "unreachable" in problems, problems
        assert "retried with backoff" in problems
        assert metric(url, "runbook_serve_spool_jobs") == 1  # never lost
        assert metric(url, 'runbook_serve_job_failures_total{stage="run"}') >= 1
        assert (read_index(folders(outputs)[0]) or {}).get("status") == "queued"
        kube.set_mode("ok")  # back: the retry (backoff 1, 2, 4 ... s) creates the Job
        assert wait_until(lambda: len(serve_jobs(kube, ns)) == 1, 40)
        assert wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 20), \
            httpx.get(f"{url}/readyz", timeout=5).json()
        kube.set_job_status(serve_jobs(kube, ns)[0]["metadata"]["name"], ns, "succeeded")
        assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 20)
        assert [s for s in _creates(kube, ns) if s == 201] == [201]
    finally:
        kube.set_mode("ok")
        stop(proc)


def test_a_forbidden_create_is_named_in_readyz_and_the_alert_stays_spooled(kube, tmp_path):
    ns = "dispatch-forbidden"
    viewer = kube.write_kubeconfig(tmp_path / "kubeconfig-viewer", user="viewer")  # reads, cannot create
    outputs, port = tmp_path / "outputs", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(outputs, None, port, *dispatch_args(viewer, ns))
    try:
        assert post(url, payload(_alerts()[2])).json()["accepted"] == 1
        assert wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 503, 20)
        problems = " ".join(httpx.get(f"{url}/readyz", timeout=5).json()["problems"])
        assert "may not `create` `jobs.batch`" in problems and "403" in problems, problems
        assert serve_jobs(kube, ns) == [] and metric(url, "runbook_serve_spool_jobs") == 1
    finally:
        assert stop(proc) == 0
    assert len(list((outputs / ".serve" / "spool").glob("*.json"))) == 1  # kept for the next start


def test_a_job_that_never_ends_is_recorded_failed_at_the_bound(kube, tmp_path):
    """No runner at all: the Job stays without status. serve stops following it at --run-timeout +
    --job-start-grace from its creation and records the incident failed, saying why."""
    ns = "dispatch-bound"
    outputs, port = tmp_path / "outputs", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(outputs, None, port, "--run-timeout", "10", *dispatch_args(kube.kubeconfig_path, ns,
                                                                                 "--job-start-grace", "1"))
    try:
        assert post(url, payload(_alerts()[3])).json()["accepted"] == 1
        assert wait_until(lambda: metric(url, "runbook_serve_spool_jobs") == 0, 40)
        (index,) = _index_by_fp(outputs).values()
        assert index["status"] == "failed" and index["dispatch"]["outcome"] == "failed"
        assert "not finished within 11 s" in index["dispatch"]["reason"] and index["dispatch"]["job"] in index["error"]
        assert metric(url, "runbook_serve_runs_failed_total") == 1
        assert serve_jobs(kube, ns)[0].get("status") in (None, {})  # nothing deleted or changed: the Job's deadline is its own
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("extra, option", [(["--dispatch", "nomad"], "--dispatch"),
                                           (["--dispatch", "kubernetes"], "--job-image"),
                                           (["--dispatch", "kubernetes", "--job-image", "x", "--job-namespace", "Bad_NS"],
                                            "--job-namespace"),
                                           (["--dispatch", "kubernetes", "--job-image", "x", "--max-jobs", "0"],
                                            "--max-jobs")])
def test_bad_dispatch_options_are_refused_naming_the_option(tmp_path, extra, option):
    from serve_support import serve_cmd

    done = subprocess.run(serve_cmd(tmp_path / "outputs", None, free_port(), *extra), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and f"'{option}'" in done.stderr, done.stderr
    assert not (tmp_path / "outputs").exists()  # refused before anything was created
