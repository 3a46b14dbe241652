"""deploy/kubernetes/serve.yaml: accepted by the real kubectl, and its container really serving.

kubectl applies every object with --dry-run=server against the Kubernetes emulator (over HTTPS, as
a real API server would be reached). The emulator has no kubelet, so the pod is reproduced the way
the kubelet would start it (env from the manifest, $(VAR) expanded by the kubelet's rules, the
ConfigMap's file mounted) and that argv is run: liveness and readiness paths answer, a webhook
without the token is refused, SIGTERM stops it within the grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from matrix_support import BIN, ROOT, wait_until
from test_deploy_manifests import container, container_env, docs, kubelet_expand

SERVE = ROOT / "deploy" / "kubernetes" / "serve.yaml"
EXAMPLE_LABELS = ROOT / "deploy" / "alertmanager" / "runbook-serve-labels.yml"


def _by_kind() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs(SERVE):
        assert d["kind"] not in out, f"two {d['kind']} objects"
        out[d["kind"]] = d
    return out


def _pod() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _by_kind()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    return pod, container(pod)


def test_kubectl_accepts_every_object_against_the_emulator(tmp_path):
    from runbook_lib.sim.kube import KubeEmulator

    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                              "apply", "--dry-run=server", "-f", str(SERVE)], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    created = [line for line in out.stdout.splitlines() if line.endswith("created (server dry run)")]
    assert len(created) == len(docs(SERVE)) == 6, out.stdout
    assert "Secret" not in _by_kind(), "Secrets are created from the environment, never committed"


def test_one_replica_on_its_own_volume_with_the_pod_safety_settings():
    kinds = _by_kind()
    deployment, pod, c = kinds["Deployment"], *_pod()
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][bound])
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    data_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == claim["name"])
    args = c["args"]
    assert args[args.index("--output-dir") + 1].startswith(data_mount + "/"), "records must live on the claim"
    selector = deployment["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        assert kinds[kind]["spec"]["selector"] == selector if kind == "Service" else \
            kinds[kind]["spec"]["selector"]["matchLabels"] == selector
    assert kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    assert deployment["spec"]["template"]["metadata"]["labels"] == selector


def test_network_policy_lets_only_alertmanager_in():
    policy = _by_kind()["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert rule["ports"] == [{"port": 9095, "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP")} <= egress_ports


def test_label_map_is_the_shipped_example_without_kube_context():
    shipped = yaml.safe_load(EXAMPLE_LABELS.read_text())
    mounted = yaml.safe_load(_by_kind()["ConfigMap"]["data"]["labels.yml"])
    assert mounted["service_labels"] == shipped["service_labels"]
    assert mounted["parameters"] == {k: v for k, v in shipped["parameters"].items() if k != "kube_context"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.notebook
def test_the_container_serves_as_the_kubelet_would_start_it(tmp_path, api_key):
    kinds = _by_kind()
    pod, c = _pod()
    token = "tok-" + os.urandom(12).hex()
    env = container_env(c, overrides={}, fields={"metadata.name": "runbook-serve-abc12"},
                        secrets={("mistral-api-key", "MISTRAL_API_KEY"): api_key,
                                 ("runbook-serve-token", "RUNBOOK_SERVE_TOKEN"): token})
    argv = [kubelet_expand(a, env) for a in [*c["command"], *c["args"]]]
    assert argv[:2] == ["runbook", "serve"] and "$(" not in " ".join(argv), argv
    # What the pod's filesystem would hold: the claim and the ConfigMap file, here under tmp_path.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    moved = {mounts["data"]: str(tmp_path / "data"), mounts["labels"]: str(tmp_path / "labels")}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.yml").write_text(kinds["ConfigMap"]["data"]["labels.yml"])
    port = _free_port()
    local = []
    for arg in argv[1:]:
        for inside, here in moved.items():
            arg = arg.replace(inside, here)
        local.append(arg.replace("0.0.0.0:9095", f"127.0.0.1:{port}"))
    run_env = {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **env}
    proc = subprocess.Popen([str(BIN / "runbook"), *local], env=run_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        probes = {p: c[f"{p}Probe"]["httpGet"]["path"] for p in ("liveness", "readiness")}

        def ready() -> bool:
            try:
                return httpx.get(base + probes["readiness"], timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, 30), "the readiness path never answered 200"
        assert httpx.get(base + probes["liveness"], timeout=2).status_code == 200
        refused = httpx.post(base + "/", json={"alerts": []}, timeout=5)
        assert refused.status_code == 401 and token not in refused.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=pod["terminationGracePeriodSeconds"]) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = proc.stdout.read() if proc.stdout else ""
    assert token not in log and api_key not in log
    assert (tmp_path / "data" / "outputs").is_dir(), "serve's state and records go to the claim"
