"""A whole incident on the embedded stack, from fault to postmortem, and secrets planted everywhere.

Fault injected -> `respond` (triage, diagnosis with an APPROVED change) -> fault cleared (recovery)
-> evidence runbook -> postmortem runbook. The postmortem must name the right class, place the
start and end near when the fault was injected and cleared, count failed calls consistently with
the simulated service's own counters, and show the applied change on its timeline.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.records import bundle
from runbook_lib.run.execute import run_notebook
from runbook_lib.records.incident import read_index
from runbook_lib.record import read_records
from runbook_lib.run.respond import respond

pytestmark = pytest.mark.notebook
BIN = Path(sys.executable).parent


def _pieces(value: str) -> set[str]:
    return {value[i:i + 8] for i in range(len(value) - 7)}


def _leaks(text: str, values: list[str]) -> list[str]:
    return sorted({p for v in values for p in _pieces(v) if p in text})


def _all_text(folder: Path) -> str:
    """Every file under `folder`, archives opened too."""
    parts = []
    for path in folder.rglob("*"):
        if path.is_file() and path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tar:
                parts += [tar.extractfile(m).read().decode("utf-8", "replace") for m in tar.getmembers() if m.isfile()]
        elif path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_full_incident_fault_to_postmortem(api_key, tmp_path, require_binary):
    from runbook_lib.demo import full_stack

    require_binary("prometheus")

    with full_stack(api_key, rate=10.0) as (st, kube, prom):
        assert prom is not None
        kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig"))
        assert prom.wait_for_data("sum(mistral_requests_total)", timeout_s=30)
        time.sleep(3)  # some healthy traffic before the fault
        t_fault = time.time()
        st.set_mode("server_error", status=503)
        assert st.wait_for_service_status({"down"}, timeout_s=10)
        index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                         "prometheus_url": prom.url, "metrics_window": "10s", "kubeconfig": kubeconfig,
                         "timeout_s": 2.0, "apply_changes": True, "operator": "alice", "incident_id": "INC-500",
                         "monitor_interval_s": 0.2, "monitor_max_s": 1.0, "healthy_needed": 2},
                        output_root=tmp_path / "outputs", progress=False)
        time.sleep(max(0.0, t_fault + 8 - time.time()))  # at least 8 s of impact
        t_clear = time.time()
        st.set_mode("ok")
        assert st.wait_for_service_status({"ok"}, timeout_s=15)
        time.sleep(4)  # a few clean scrapes after recovery
        failed_by_service = st.service.stats()["errors"]
        folder = Path(index["folder"])
        ev = run_notebook("evidence", {"incident_folder": str(folder), "prometheus_url": prom.url,
                                       "kubeconfig": kubeconfig, "timeout_s": 5.0, "margin": "2m"},
                          output_root=tmp_path, progress=False, record_dir=folder)
    assert ev.ok, ev.error
    assert index["error_class"] == "provider_error" and len(index["changes_applied"]) == 1
    # the fallback was applied but calls kept failing (the fault is the provider's): not "mitigated"
    assert index["status"] == "diagnosed" and "mitigated_at" not in index, index

    out = subprocess.run([str(BIN / "runbook"), "postmortem", "INC-500", "--output-dir", str(tmp_path / "outputs"),
                          "-q"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "POSTMORTEM provider_error" in out.stdout
    rec = read_records(folder / "postmortem.ipynb")
    imp, timings = rec["impact_window"], rec["timings"]
    step = imp["step_s"]
    assert imp["found"] and imp["source"] == "metrics" and step <= 2
    start, end = pd.Timestamp(imp["start"]).timestamp(), pd.Timestamp(imp["end"]).timestamp()
    assert abs(start - t_fault) <= step + 3, (imp["start"], t_fault)
    assert abs(end - t_clear) <= step + 4, (imp["end"], t_clear)
    # every failed call the service made happened in the incident; the last scrapes saw them all
    assert abs(imp["failed_requests"] - failed_by_service) <= max(2, 0.03 * failed_by_service), \
        (imp["failed_requests"], failed_by_service)
    assert imp["by_code"].keys() == {"503"}
    # the change: on the timeline, in the figure's inputs, timed after detection and before the end
    change = index["changes_applied"][0]
    events = [e["event"] for e in rec["timeline"]]
    assert any(e.startswith("CHANGE by alice: set env") for e in events)
    assert 0 <= timings["time_to_detect_s"] <= timings["time_to_mitigate_s"] <= imp["duration_s"] + 1
    # the first action is the change; mitigated = the impact ended after it (the postmortem asks what ended it)
    assert timings["first_action_at"] == change["at"] and timings["mitigated_at"] == imp["end"]
    assert timings["time_to_first_action_s"] <= timings["time_to_mitigate_s"]
    md = (folder / "postmortem.md").read_text()
    assert md.startswith("## Incident: Mistral AI Mistral service error (5xx)")
    assert f"Requests failed: {imp['failed_requests']:,}" in md and "CHANGE by alice" in md
    assert "MISTRAL_FALLBACK" in md  # the undo command is in the resolution
    section = read_index(folder)["postmortem"]
    assert section["failed_requests"] == imp["failed_requests"] and section["time_to_mitigate_s"] is not None
    for name in ("postmortem.html", "postmortem-traffic.png", "postmortem-latency.png", "evidence.html"):
        assert (folder / name).stat().st_size > 1000, name

    # the bundle alone (copied away from its incident) gives the same analysis
    archive = folder / read_index(folder)["evidence"]["archive"]  # the index holds it relative to the folder
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(archive, alone)
    again = run_notebook("postmortem", {"source": str(alone / archive.name)}, output_root=tmp_path / "o2",
                         progress=False)
    assert again.ok, again.error
    assert read_records(again.notebook_path)["impact_window"]["failed_requests"] == imp["failed_requests"]
    assert (Path(again.record_dir) / "postmortem.md").exists()


def _plant_log_lines(log: Path, p: dict[str, str]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    lines = [
        {"ts": now, "level": "error", "msg": f"upstream 401; headers Authorization: Bearer {p['bearer']}",
         "model": "mistral-small-latest", "code": "401", "latency_ms": 12.0},
        {"ts": now, "level": "error", "msg": f"retrying with X-Api-Key: {p['x_api_key']}", "model": "m", "code": "401"},
        {"ts": now, "level": "info", "msg": f"config loaded: upstream key {p['sk']}"},
        {"ts": now, "level": "info", "msg": f"db=postgres://app:{p['url_password']}@db:5432/prod"},
        {"ts": now, "level": "info", "msg": "token", "api_token": p["json_token"]},
        {"ts": now, "level": "debug", "msg": f"using {p['api_key']} for mistral"},
        {"ts": now, "level": "debug", "msg": f"secret data: {base64.b64encode(p['api_key'].encode()).decode()}"},
    ]
    with log.open("a") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")


def test_planted_secrets_never_reach_bundle_notebooks_or_html(cluster_stack, tmp_path, api_key):
    st = cluster_stack
    planted = {"api_key": api_key, "bearer": secrets.token_urlsafe(20), "x_api_key": secrets.token_hex(16),
               "sk": "sk-" + secrets.token_hex(16), "url_password": "pw" + secrets.token_hex(8),
               "json_token": secrets.token_hex(12), "extra": "xtra-" + secrets.token_urlsafe(18)}
    os.environ["OTHER_SECRET"] = planted["extra"]
    try:
        st.set_mode("auth_failure")
        assert st.wait_for_service_status({"down"}, timeout_s=10)
        _plant_log_lines(tmp_path / "service.log", planted)
        with (tmp_path / "service.log").open("a") as fh:
            fh.write(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "info",
                                 "msg": f"extra {planted['extra']}"}) + "\n")
        # a literal secret in the Deployment's env and its last-applied annotation, as kubectl apply leaves it
        sentry = st.kube.literal_secret_values["SENTRY_TOKEN"]
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=st.kubeconfig["ok"])
        client.AppsV1Api(api).patch_namespaced_deployment("mistral-service", "default", {"metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"spec": {"template": {"spec": {
                "containers": [{"name": "app", "env": [{"name": "PAYMENTS_PASSWORD",
                                                        "value": planted["url_password"]}]}]}}}})}}})
        api.close()
        index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                         "prometheus_url": "", "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0,
                         "incident_id": "INC-LEAK"}, output_root=tmp_path / "outputs", progress=False)
        folder = Path(index["folder"])
        ev = run_notebook("evidence", {"incident_folder": str(folder), "prometheus_url": "",
                                       "kubeconfig": st.kubeconfig["ok"], "timeout_s": 2.0,
                                       "extra_secret_envs": "OTHER_SECRET"},
                          output_root=tmp_path, progress=False, record_dir=folder)
        assert ev.ok, ev.error
        pm = run_notebook("postmortem", {"source": str(folder)}, output_root=tmp_path, progress=False,
                          record_dir=folder)
        assert pm.ok, pm.error
    finally:
        del os.environ["OTHER_SECRET"]
    bundle_dir = Path(ev.verdict["bundle"])
    logs = (bundle_dir / "logs" / "pods.jsonl").read_text()
    assert "upstream 401" in logs and "[REDACTED sha256:" in logs  # the planted lines are there, redacted
    assert bundle.verify(bundle_dir) == []
    manifests = json.loads((bundle_dir / "k8s" / "manifests.json").read_text())
    annotation = manifests["deployment"]["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert "PAYMENTS_PASSWORD" in annotation and "[REDACTED sha256:" in annotation  # collected, redacted
    # the postmortem fell back to the logs, and says so
    assert read_records(folder / "postmortem.ipynb")["traffic"]["source"] == "pod logs (ESTIMATE)"
    text = _all_text(folder)
    assert (folder / "evidence.html").exists() and (folder / "postmortem.html").exists()
    leaked = _leaks(text, [*planted.values(), base64.b64encode(api_key.encode()).decode(), sentry])
    assert not leaked, f"planted secrets leaked: {leaked}"
