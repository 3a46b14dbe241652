"""Evidence collection against the emulator (and no Prometheus: listed missing), secrets planted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runbook_lib.records import bundle, collect as evidence
from runbook_lib.run.execute import run_notebook

pytestmark = pytest.mark.notebook


def test_collect_bundle_from_cluster_and_records_without_leaks(cluster_stack, tmp_path, api_key, dead_port):
    st = cluster_stack
    st.set_mode("auth_failure")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    triage = run_notebook("triage", {"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                                     "prometheus_url": "", "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0},
                          output_root=tmp_path / "incidents", progress=False)
    end = time.time()
    manifest = evidence.collect(tmp_path / "bundles", "INC-1-evidence", start=end - 600, end=end,
                                kubeconfig=st.kubeconfig["ok"], prometheus_url=f"http://127.0.0.1:{dead_port}",
                                incident_folder=triage.record_dir, secrets=[api_key], timeout_s=2.0)
    folder = tmp_path / "bundles" / "INC-1-evidence"
    assert (tmp_path / "bundles" / "INC-1-evidence.tar.gz").exists() and bundle.verify(folder) == []
    paths = {f["path"] for f in manifest["files"]}
    assert {"logs/pods.jsonl", "k8s/events.json", "k8s/deployment.json", "k8s/revisions.json",
            "records/triage.json"} <= paths
    assert {m["what"].split()[0] for m in manifest["missing"]} == {"metrics"}  # Prometheus down: listed
    logs = (folder / "logs" / "pods.jsonl").read_text()
    assert "401" in logs  # the service's auth failures are in the evidence
    everything = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())
    for secret in [api_key, *st.kube.literal_secret_values.values()]:
        assert not [secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8] in everything]
    records = {r["name"]: r for r in json.loads((folder / "records" / "triage.json").read_text())}
    assert records["verdict"]["value"]["severity"] == "P1" and records["verdict"]["recorded_at"]


def test_unreachable_cluster_is_listed_missing_and_bundle_still_written(tmp_path, dead_port):
    cfg = tmp_path / "kc"
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                               "clusters": [{"name": "x", "cluster": {"server": f"http://127.0.0.1:{dead_port}"}}],
                               "users": [{"name": "x", "user": {"token": "t"}}],
                               "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    end = time.time()
    manifest = evidence.collect(tmp_path, "b", start=end - 60, end=end, kubeconfig=str(cfg), timeout_s=1.0)
    assert manifest["files"] == [] and len(manifest["missing"]) == 6  # 5 cluster reads + metrics
    assert Path(tmp_path / "b" / "manifest.json").exists()


def test_step_is_chosen_from_the_window():
    assert evidence.step_for(600) == 15 and evidence.step_for(7200) == 29 and evidence.step_for(86400) == 346


def test_evidence_notebook_bundles_the_incident_and_updates_its_index(cluster_stack, tmp_path, api_key):
    from runbook_lib.records.incident import read_index
    from runbook_lib.run.respond import respond

    st = cluster_stack
    st.set_mode("auth_failure")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                     "prometheus_url": "", "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0,
                     "incident_id": "INC-77"}, output_root=tmp_path, progress=False)
    folder = Path(index["folder"])
    result = run_notebook("evidence", {"incident_folder": str(folder), "prometheus_url": "",
                                       "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0, "margin": "2m"},
                          output_root=tmp_path, progress=False, record_dir=folder)
    assert result.ok, result.error
    assert result.incident_id == "INC-77"  # run into the incident's folder: its id, not a fresh one
    assert result.verdict["line"].startswith("EVIDENCE: ") and result.verdict["missing"] == 1  # metrics: no URL
    bundle_dir = Path(result.verdict["bundle"])
    assert bundle_dir.parent == folder and bundle.verify(bundle_dir) == []
    assert Path(str(bundle_dir) + ".tar.gz").exists()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert {"records/incident.json", "records/triage.json", "records/diagnose_auth.json", "logs/pods.jsonl"} <= paths
    assert "records/evidence.json" not in paths  # the notebook being run is not evidence of the incident
    # the window is the incident's span plus the margin
    started = index["started_at"].replace("Z", "")
    assert manifest["window"]["start"] < started and manifest["window"]["seconds"] >= 120
    # relative to the incident folder, so the archive can move
    assert read_index(folder)["evidence"]["bundle"] == bundle_dir.name and (folder / bundle_dir.name) == bundle_dir
    assert (folder / "evidence.html").exists()
