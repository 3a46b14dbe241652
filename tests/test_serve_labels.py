"""`runbook serve --label-map`: alert labels become runbook parameters, and alerts correlate per service.

The server is the real one; the runs it starts are real `runbook respond` processes against the
embedded simulators. Two services fail at once: two incidents, each with its own parameters (read
back from the notebooks' run records), and a later alert of the first service joins the first
incident even though the second is newer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.records.incident import read_index
from runbook_lib.serve.labelmap import LabelMap, load_label_map
from runbook_lib.serve.server import AlertServer, ServeConfig
from runbook_lib.sim._http import wait_until

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = Path(sys.executable).parent / "runbook"
EXAMPLE = ROOT / "deploy" / "alertmanager" / "runbook-serve-labels.yml"

MAP = """
service_labels: [cluster, namespace, service]
parameters:
  namespace: "{namespace}"
  label_selector: "app in ({service})"
  kube_context: "{cluster}"
  service_health_url: "http://{health}/health"
  affected_features: "{service} ({{beta}})"
"""


def _alert(fp: str, name: str, error_class: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "severity": "page", "error_class": error_class, **labels},
            "annotations": {"summary": "s", "runbook": "diagnose_auth"}, "startsAt": "2026-11-23T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp}


def _post(url: str, *alerts: dict[str, Any]) -> httpx.Response:
    body = {"version": "4", "groupKey": "g", "status": alerts[0]["status"], "receiver": "runbook-serve",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": list(alerts)}
    return httpx.post(f"{url}/webhook", json=body, timeout=10)


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def _by_opener(root: Path) -> dict[str, dict[str, Any]]:
    return {i["alert"]["fingerprint"]: {**i, "path": f} for f in _folders(root) if (i := read_index(f))}


def test_two_services_two_incidents_with_their_parameters(stack, tmp_path):
    stack.set_mode("auth_failure")
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    (tmp_path / "labels.yml").write_text(MAP)
    label_map = load_label_map(tmp_path / "labels.yml")
    health = stack.service_health_url.split("://", 1)[1].split("/", 1)[0]  # host:port of the simulated service
    outputs = tmp_path / "outputs"
    config = ServeConfig(port=0, output_dir=outputs, workers=2, warm=0, label_map=label_map,
                         parameters={"prometheus_url": "", "timeout_s": 2.0, "mistral_url": stack.mistral_url,
                                     "namespace": "static-ns", "kube_context": "static-ctx"})
    checkout = {"cluster": "prod-eu", "namespace": "shop", "service": "checkout", "health": health}
    search = {"namespace": "catalog", "service": "search", "health": health}  # no cluster label
    with AlertServer(config, log=open(os.devnull, "w")) as srv:
        assert _post(srv.url, _alert("c0c0c0c1", "MistralAuthFailures", "auth", **checkout)).status_code == 200
        assert wait_until(lambda: len(_folders(outputs)) == 1, 10)
        assert _post(srv.url, _alert("5e5e5e51", "MistralAuthFailures", "auth", **search)).status_code == 200
        assert wait_until(lambda: len(_folders(outputs)) == 2, 10)
        # the checkout service fires another rule: it joins checkout's incident, not the newer search one
        assert _post(srv.url, _alert("c0c0c0c2", "MistralErrorRateHigh", "any", **checkout)).status_code == 200
        done = ("triaged", "diagnosed", "failed")
        assert wait_until(lambda: all(i.get("status") in done for i in _by_opener(outputs).values())
                          and len(_by_opener(outputs)["c0c0c0c1"].get("alerts", [])) == 2, 120, 0.3), \
            _by_opener(outputs)
        metrics = httpx.get(f"{srv.url}/metrics").text
    incidents = _by_opener(outputs)
    assert sorted(incidents) == ["5e5e5e51", "c0c0c0c1"], "two services, two incidents"
    one, two = incidents["c0c0c0c1"], incidents["5e5e5e51"]
    assert [a["fingerprint"] for a in one["alerts"]] == ["c0c0c0c1", "c0c0c0c2"]
    assert [a["fingerprint"] for a in two["alerts"]] == ["5e5e5e51"]
    assert "runbook_serve_runs_started_total 2.0" in metrics
    assert 'runbook_serve_alerts_total{action="joined",status="firing"} 1.0' in metrics
    for index in (one, two):
        assert index["status"] == "diagnosed" and index["error_class"] == "auth", index

    assert one["service"] == {"cluster": "prod-eu", "namespace": "shop", "service": "checkout"}
    assert two["service"] == {"namespace": "catalog", "service": "search"}
    assert two["parameters_not_mapped"] == {"kube_context": "alert has no label cluster"}
    # what the notebooks really ran with: their run records
    for index, ns, app, context in ((one, "shop", "checkout", "prod-eu"), (two, "catalog", "search", "static-ctx")):
        ran = json.loads((index["path"] / "triage.run.json").read_text())["parameters"]
        assert ran["namespace"] == ns and ran["label_selector"] == f"app in ({app})", ran
        assert ran["kube_context"] == context, ran  # the static -p value where the label is missing
        assert ran["service_health_url"] == stack.service_health_url
        auth = json.loads((index["path"] / "diagnose_auth.run.json").read_text())["parameters"]
        assert auth["namespace"] == ns and auth["affected_features"] == f"{app} ({{beta}})", auth
    state = json.loads((outputs / ".serve" / "incidents.json").read_text())
    assert state["c0c0c0c2"]["id"] == one["id"] and state["c0c0c0c2"]["service"] == \
        "cluster=prod-eu,namespace=shop,service=checkout"


def test_the_shipped_example_loads_and_maps():
    label_map = load_label_map(EXAMPLE)
    mapped, skipped = label_map.parameters_for({"cluster": "prod-eu", "namespace": "shop", "service": "checkout"})
    assert skipped == {}
    assert mapped["namespace"] == "shop" and mapped["label_selector"] == "app in (checkout)"
    assert mapped["kube_context"] == "prod-eu"
    assert mapped["service_health_url"] == "http://checkout.shop.svc.cluster.local:8080/health"
    assert label_map.service_key({"namespace": "shop", "service": "checkout", "pod": "x"}) == \
        "namespace=shop,service=checkout"
    assert LabelMap().service_key({"alertname": "MistralAuthFailures"}) == ""


@pytest.mark.parametrize("text, problem", [
    ("parameters: [", "not valid YAML at line"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("service_labels: [namespace]\nparams: {}\n", "unknown key(s) params"),
    ("service_labels: namespace,,x\n", "service_labels"),
    ("service_labels: [namespace, code]\n", "service_labels"),
    ("parameters: {namespace: 5}\n", "parameters.namespace: the template must be non-empty text"),
    ("parameters: {namespace: '{ns'}\n", "parameters.namespace: template"),
    ("parameters: {namespace: '{ns!r}'}\n", "plain {label} placeholder"),
    ("parameters: {apply_changes: '{x}'}\n", "parameters.apply_changes: cannot come from alert labels"),
    ("parameters: {mistral_url: 'http://{x}'}\n", "parameters.mistral_url: cannot come from alert labels"),
    ("parameters: {api_key_env: '{x}'}\n", "parameters.api_key_env: cannot come from alert labels"),
    ("parameters: {no_such_parameter: '{x}'}\n", "parameters.no_such_parameter"),
    ("parameters: namespace\n", "parameters must map"),
])
def test_malformed_label_maps_are_refused_naming_the_option_and_key(tmp_path, text, problem):
    path = tmp_path / "labels.yml"
    path.write_text(text)
    with pytest.raises(ParameterError) as err:
        load_label_map(path)
    assert err.value.name == "--label-map" and problem in str(err.value), str(err.value)


def test_serve_refuses_a_bad_label_map_before_listening(tmp_path):
    bad = tmp_path / "labels.yml"
    bad.write_text("parameters: {namespace: '{ns'}\n")
    for path, text in ((bad, "parameters.namespace"), (tmp_path / "missing.yml", "cannot read it")):
        out = subprocess.run([str(RUNBOOK), "serve", "--label-map", str(path), "--listen", "127.0.0.1:9",
                              "--output-dir", str(tmp_path / "outputs")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert "'--label-map'" in out.stderr and text in out.stderr, out.stderr
    assert not (tmp_path / "outputs").exists()
