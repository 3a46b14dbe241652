"""runbook_lib.kube against the embedded cluster: real HTTP, the official client, no mocks."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import kube, params
from runbook_lib.secrets import fingerprint
from runbook_lib.sim.kube import KubeEmulator

NS = "default"
APP = "mistral-service"
TIMEOUT = 1.0
READS = ("pods", "error_logs", "events", "deployment", "rollout_status", "revision_history", "network_policies",
         "secret_fingerprint")


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def kubeconfig(emu: KubeEmulator, tmp_path: Path) -> str:
    return str(emu.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def cluster(kubeconfig: str) -> Iterator[kube.Cluster]:
    with kube.connect(kubeconfig, timeout_s=3.0) as c:
        yield c


def _kubeconfig_for(path: Path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "whatever-token"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}))
    return str(path)


def _all_reads(c: kube.Cluster) -> dict[str, kube.KubeResult]:
    return {name: getattr(c, name)() for name in READS}


def _ok_client(kubeconfig: str) -> Any:
    from kubernetes import config

    return config.new_client_from_config(kubeconfig, persist_config=False)


# -- import cost ------------------------------------------------------------------------------------
def test_import_is_light() -> None:
    code = "import sys, runbook_lib.kube; print('kubernetes' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- each read against the seeded data ---------------------------------------------------------------
def test_pods(cluster: kube.Cluster, emu: KubeEmulator, kubeconfig: str) -> None:
    r = cluster.pods(NS, f"app={APP}")
    assert r.ok and r.kubectl == (f"kubectl --kubeconfig {kubeconfig} --context embedded get pods -n default "
                                  f"-l app={APP} -o wide")
    assert [p["name"] for p in r.data] == emu.pod_names()
    assert [p["restarts"] for p in r.data] == [0, 3]
    assert {p["status"] for p in r.data} == {"Running"} and {p["ready"] for p in r.data} == {"2/2"}
    restarted = r.data[1]
    assert restarted["containers"][0]["last_exit_reason"] == "Error" and 600 < restarted["last_restart_age_s"] < 900
    assert [c["name"] for c in restarted["containers"]] == ["app", "proxy"]
    frame = r.frame()
    assert len(frame) == 2 and {"name", "status", "restarts"} <= set(frame.columns)
    assert cluster.pods(NS, "app=nothing").data == []


def _expected_errors(emu: KubeEmulator, cutoff: float) -> list[tuple[float, str, str, str]]:
    """An independent `grep -i error` over what every container holds since `cutoff`."""
    out = []
    for pod in emu.pod_names():
        for container in ("app", "proxy"):
            for ts, line in emu.container_log(pod, container):
                if ts < cutoff:
                    continue
                if line.startswith("{"):
                    e = json.loads(line)
                    hit = e.get("level") in ("error", "critical") or "error" in str(e.get("msg", "")).lower()
                else:
                    hit = "error" in line.lower()
                if hit:
                    out.append((ts, pod, container, line))
    return sorted(out)


def _klass(line: str) -> str:
    for needle, cls in (("429 rate_limited", "rate_limited"), ("429 invalid_request_error", "capacity_exceeded"),
                        ("401 Unauthorized", "auth_failure"), ("503 server_error", "server_error"),
                        ("ReadTimeout", "timeout"), ("connection timeout", "timeout"), ("ConnectError", "connection")):
        if needle in line:
            return cls
    return "other"


def test_error_logs_match_grep_over_every_container(cluster: kube.Cluster, emu: KubeEmulator,
                                                    kubeconfig: str) -> None:
    t_before = time.time()
    r = cluster.error_logs(NS, f"app={APP}", since_s=300, tail=10)
    t_after = time.time()
    assert r.ok, r.finding
    assert r.kubectl == (f"kubectl --kubeconfig {kubeconfig} --context embedded logs -n default -l app={APP} "
                         "--all-containers --prefix --timestamps --since=5m --tail=-1 | sort -s -k2,2 | grep -iE "
                         "'error|\"(level|lvl|severity|levelname|log[.]level)\": *\"(alert|crit|critical|emerg|"
                         "emergency|err|error|fatal|panic|severe)\"' | tail -n 10")
    candidates = [_expected_errors(emu, t_before - 300), _expected_errors(emu, t_after - 300)]
    expected = next(e for e in candidates if len(e) == r.data["matched"])
    assert r.data["matched"] >= 15
    assert [(ln["pod"], ln["container"], ln["line"]) for ln in r.data["lines"]] == [e[1:] for e in expected[-10:]]
    assert {c["container"] for c in r.data["containers"] if c["matched"]} == {"app", "proxy"}  # multi-container
    assert all(c["error"] is None for c in r.data["containers"])
    groups = {g["error_class"]: g["count"] for g in r.data["groups"]}
    assert groups == dict(Counter(_klass(e[3]) for e in expected))
    assert {"rate_limited", "auth_failure", "timeout", "capacity_exceeded", "connection"} <= set(groups)
    counts = [g["count"] for g in r.data["groups"]]
    assert counts == sorted(counts, reverse=True)
    assert all(ln["ts"] and ln["error_class"] in kube.ERROR_CLASSES for ln in r.data["lines"])
    assert len(r.frame()) == 10

    older = cluster.error_logs(NS, f"app={APP}", since_s=3600, tail=50, previous=True)
    assert older.data["matched"] > r.data["matched"]
    assert any(ln["previous"] and "worker exited" in ln["msg"] for ln in older.data["lines"])


def test_error_logs_from_a_live_log_source(tmp_path: Path) -> None:
    now = time.time()
    lines = []
    for i in range(30):
        code = ("429", "401", "503", "200", "200", "000")[i % 6]
        err = {"429": "429 rate_limited", "401": "401 Unauthorized", "503": "503 server_error",
               "000": "000 ReadTimeout"}.get(code)
        lines.append(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 60 + i)),
                                 "level": "error" if err else "info",
                                 "msg": f"mistral request failed: {err}" if err else "mistral request ok: 200",
                                 "model": "mistral-small-latest", "code": code}))
    with KubeEmulator(log_source=lambda: lines) as emu:
        kc = str(emu.write_kubeconfig(tmp_path / "kc"))
        with kube.connect(kc, timeout_s=3.0) as c:
            r = c.error_logs(NS, f"app={APP}", since_s=120, tail=100, pattern="error")
    app_lines = [ln for ln in r.data["lines"] if ln["container"] == "app"]
    assert len(app_lines) == 20  # 4 of every 6 calls failed, each line served by exactly one pod
    assert len({ln["pod"] for ln in app_lines}) == 2
    by_class = {g["error_class"]: g["count"] for g in kube.group_errors(app_lines)}
    assert by_class == {"rate_limited": 5, "auth_failure": 5, "server_error": 5, "timeout": 5}
    assert {ln["model"] for ln in app_lines} == {"mistral-small-latest"}


def test_group_errors_counts_and_order() -> None:
    lines = (
        ['{"level":"error","msg":"mistral request failed: 429 rate_limited","code":"429"}'] * 3
        + ['{"level":"error","msg":"mistral request failed: 401 Unauthorized","code":"401"}'] * 2
        + ['{"level":"error","msg":"mistral request failed: 429 invalid_request_error","code":"429"}',
           '{"level":"error","message":"Service tier capacity exceeded for this model."}',
           '{"level":"error","msg":"mistral request failed: 503 server_error","code":"503"}',
           "ERROR upstream returned HTTP 502 Bad Gateway",
           '{"level":"error","msg":"mistral request failed: 000 ReadTimeout","code":"000"}',
           "httpx.ConnectTimeout: timed out",
           '{"level":"error","msg":"mistral request failed: 000 ConnectError: [Errno 111] Connection refused"}',
           "ERROR: [Errno -2] Name or service not known (api.mistral.ai)",
           "ERROR:    Exception in ASGI application"])
    groups = kube.group_errors(lines)
    assert [(g["error_class"], g["count"]) for g in groups] == [
        ("rate_limited", 3), ("auth_failure", 2), ("capacity_exceeded", 2), ("server_error", 2), ("timeout", 2),
        ("connection", 2), ("other", 1)]
    assert groups[0]["label"] == "rate limited (429)" and groups[0]["example"] == "mistral request failed: 429 rate_limited"
    assert kube.group_errors([]) == []
    assert kube.classify_error('Authorization: Bearer sk-abcdefghijklmnop rejected', "401") == "auth_failure"
    assert "sk-abcdefghijklmnop" not in kube.group_errors(["401 Bearer sk-abcdefghijklmnop"])[0]["example"]


def test_events_sorted_by_time(cluster: kube.Cluster, kubeconfig: str) -> None:
    r = cluster.events(NS)
    assert r.ok and r.kubectl == (f"kubectl --kubeconfig {kubeconfig} --context embedded get events -n default "
                                  "--sort-by=.lastTimestamp")
    seen = [e["last_seen"] for e in r.data]
    assert None not in seen and seen == sorted(seen)
    backoff = next(e for e in r.data if e["reason"] == "BackOff")
    assert backoff["type"] == "Warning" and backoff["count"] == 7 and backoff["object"].startswith("pod/")
    assert any(e["reason"] == "TopologyAwareHintsDisabled" for e in r.data)  # eventTime only, no lastTimestamp
    assert r.data[-1]["reason"] == "Unhealthy"  # the most recent one last, as kubectl shows it


def test_deployment_env_redacted(cluster: kube.Cluster, emu: KubeEmulator) -> None:
    r = cluster.deployment(NS, APP)
    assert r.ok and r.kubectl.endswith(f"get deployment {APP} -n default -o yaml # env values redacted")  # kubectl: test_kubectl_real.py
    d = r.data
    assert (d["replicas"], d["ready"], d["revision"], d["selector"]) == (2, 2, "2", f"app={APP}")
    assert d["images"]["app"].endswith(":1.4.2") and [c["name"] for c in d["containers"]] == ["app", "proxy"]
    env = {(e["container"], e["name"]): e for e in d["env"]}
    key = env[("app", "MISTRAL_API_KEY")]
    assert (key["source"], key["secret"], key["key"], key["value"]) == ("secret", "mistral-secrets", "api-key", None)
    token = env[("app", "SENTRY_TOKEN")]
    assert token["redacted"] and token["value"] is None and token["fingerprint"] == fingerprint(emu.sentry_token)
    assert env[("app", "MISTRAL_TIMEOUT")]["value"] == "30000"
    assert env[("app", "MAX_CONCURRENT_REQUESTS")]["value"] == "20"
    assert env[("app", "POD_NAME")]["source"] == "field"
    assert "annotations" not in json.dumps(d)  # last-applied-configuration carries literal values


def test_rollout_status_and_revision_history(cluster: kube.Cluster, kubeconfig: str, emu: KubeEmulator) -> None:
    status = cluster.rollout_status(NS, APP)
    assert status.ok and status.data["done"] and status.data["message"] == f'deployment "{APP}" successfully rolled out'
    assert status.kubectl.endswith(f"rollout status deployment/{APP} -n default --watch=false")

    hist = cluster.revision_history(NS, APP)
    assert hist.ok and hist.kubectl.endswith(f"rollout history deployment/{APP} -n default")
    assert [(h["revision"], h["current"], h["replicas"]) for h in hist.data] == [(1, False, 0), (2, True, 2)]
    assert hist.data[1]["change_cause"] == f"kubectl set image deployment/{APP} app=registry.example.com/{APP}:1.4.2"
    assert "app: env MISTRAL_TIMEOUT 10000 -> 30000" in hist.data[1]["changes"]
    assert any("image" in c and "1.4.1 -> " in c for c in hist.data[1]["changes"])

    # a new literal secret through `kubectl set env`: revision 3, the value nowhere in what we return
    from kubernetes import client

    new_token = "sntrys_" + "Z9" * 20
    client.AppsV1Api(_ok_client(kubeconfig)).patch_namespaced_deployment(APP, NS, {
        "metadata": {"annotations": {"kubernetes.io/change-cause":
                                     f"kubectl set env deployment/{APP} SENTRY_TOKEN={new_token}"}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
            {"name": "SENTRY_TOKEN", "value": new_token}]}]}}}})
    emu.clear_requests()
    hist = cluster.revision_history(NS, APP)
    latest = hist.data[-1]
    assert (latest["revision"], latest["current"]) == (3, True)
    assert latest["changes"] == ["app: env SENTRY_TOKEN changed (value hidden)"]
    assert latest["change_cause"] == f"kubectl set env deployment/{APP} SENTRY_TOKEN=[REDACTED]"
    blob = json.dumps([hist.to_dict(), cluster.deployment(NS, APP).to_dict()])
    assert new_token not in blob and emu.sentry_token not in blob
    assert cluster.rollout_status(NS, APP).data["revision"] == "3"


def test_network_policies_flag_the_egress_block(cluster: kube.Cluster, kubeconfig: str) -> None:
    r = cluster.network_policies(NS, f"app={APP}")
    assert r.ok and r.kubectl.endswith("get networkpolicy -n default -o yaml")
    pols = {p["name"]: p for p in r.data["policies"]}
    assert pols[f"{APP}-egress"]["could_block_mistral"] and pols[f"{APP}-egress"]["allows_mistral"] is False
    assert not pols["default-deny-ingress"]["could_block_mistral"]
    assert (r.data["verdict"], r.data["blocking"]) == ("blocked", [f"{APP}-egress"])
    assert cluster.network_policies(NS, f"app={APP}", target_ips=["10.1.2.3"]).data["verdict"] == "allowed"

    from kubernetes import client

    client.NetworkingV1Api(_ok_client(kubeconfig)).create_namespaced_network_policy(NS, {
        "metadata": {"name": "allow-https-egress"},
        "spec": {"podSelector": {"matchLabels": {"app": APP}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                             "ports": [{"protocol": "TCP", "port": 443}]}]}})
    r = cluster.network_policies(NS, f"app={APP}")
    assert r.data["verdict"] == "allowed" and not {p["name"]: p for p in r.data["policies"]}["allow-https-egress"][
        "could_block_mistral"]


def test_analyse_policy_cases() -> None:
    labels = {"app": APP}

    def pol(spec: dict[str, Any]) -> dict[str, Any]:
        return kube.analyse_policy({"metadata": {"name": "p"}, "spec": spec}, labels, [])

    assert pol({"podSelector": {}, "policyTypes": ["Egress"]})["could_block_mistral"]  # deny all egress
    assert not pol({"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Egress"]})["selects_pods"]
    assert not pol({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [APP]}]},
                    "policyTypes": ["Egress"], "egress": [{}]})["could_block_mistral"]  # allow all
    only_dns = pol({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]})
    assert only_dns["could_block_mistral"] and only_dns["allows_mistral"] is False
    ranged = pol({"podSelector": {}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]})
    assert ranged["allows_mistral"] is None and ranged["could_block_mistral"]
    wide_ports = pol({"podSelector": {}, "policyTypes": ["Egress"],
                      "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 400, "endPort": 500}]}]})
    assert wide_ports["allows_mistral"] is True
    implicit = pol({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    assert implicit["restricts_egress"] and implicit["could_block_mistral"]


def test_secret_fingerprint_never_the_value(cluster: kube.Cluster, emu: KubeEmulator) -> None:
    r = cluster.secret_fingerprint(NS, "mistral-secrets", "api-key")
    assert r.ok and r.data == {"secret": "mistral-secrets", "key": "api-key", "present": True,
                               "length": len(emu.api_key), "fingerprint": fingerprint(emu.api_key)}
    assert cluster.secret_fingerprint(NS, "mistral-secrets", "other").data["present"] is False


def test_no_secret_value_in_any_result(cluster: kube.Cluster, emu: KubeEmulator) -> None:
    results = _all_reads(cluster)
    assert all(r.ok for r in results.values()), {k: r.finding for k, r in results.items() if not r.ok}
    blob = json.dumps([r.to_dict() for r in results.values()]) + json.dumps(
        cluster.error_logs(NS, f"app={APP}", since_s=3600, tail=500, previous=True).to_dict())
    for secret in (emu.sentry_token, emu.api_key, base64.b64encode(emu.api_key.encode()).decode()):
        assert secret not in blob


def test_reads_send_no_write(cluster: kube.Cluster, emu: KubeEmulator) -> None:
    emu.clear_requests()
    _all_reads(cluster)
    kube.recent_errors(cluster.kubeconfig, timeout_s=3.0)
    assert emu.writes() == []
    assert emu.requests and {r["method"] for r in emu.requests} == {"GET"}


def test_recent_errors_in_one_call(kubeconfig: str, emu: KubeEmulator, tmp_path: Path) -> None:
    out = kube.recent_errors(kubeconfig, namespace=NS, selector=f"app={APP}", since_s=300, tail=10, timeout_s=3.0)
    assert out["status"] == "ok" and out["reason"] is None and len(out["lines"]) == 10 and out["groups"]
    assert out["context"] == "embedded" and out["server"] == emu.url
    expired = kube.recent_errors(str(emu.write_kubeconfig(tmp_path / "exp", user="expired")), timeout_s=3.0)
    assert expired["status"] == "unauthorized" and kube.REAUTH in expired["reason"].lower()
    assert expired["lines"] == [] and expired["groups"] == []


def test_a_selector_matching_no_pod_says_so_rather_than_no_errors(kubeconfig: str, emu: KubeEmulator) -> None:
    """Nothing read is not "no error lines": the note names the selector and the namespace."""
    out = kube.recent_errors(kubeconfig, namespace=NS, selector="app=nobody", timeout_s=3.0)
    assert out["status"] == "ok" and out["pods"] == [] and out["scanned"] == 0 and out["lines"] == []
    assert out["note"].startswith("no pods matched `app=nobody` in namespace `default`")
    found = kube.recent_errors(kubeconfig, namespace=NS, selector=f"app={APP}", timeout_s=3.0)
    assert found["pods"] == emu.pod_names() and found["note"] is None


# -- failures become findings, in time ---------------------------------------------------------------
def test_expired_credentials_say_reauthenticate(emu: KubeEmulator, tmp_path: Path) -> None:
    path = str(emu.write_kubeconfig(tmp_path / "expired", user="expired"))
    with kube.connect(path, timeout_s=TIMEOUT) as c:
        for name, r in _all_reads(c).items():
            assert not r.ok and r.data is None, name
            f = r.finding
            assert f.status == kube.UNAUTHORIZED and f.http_status == 401
            assert "re-authenticate with your cloud provider" in f.message.lower()
            assert f.kubectl == r.kubectl and r.elapsed_s < TIMEOUT + 1


def test_forbidden_names_verb_and_resource_and_says_escalate(emu: KubeEmulator, tmp_path: Path) -> None:
    with kube.connect(str(emu.write_kubeconfig(tmp_path / "forbidden", user="forbidden")), timeout_s=TIMEOUT) as c:
        pods = c.pods(NS, f"app={APP}").finding
        assert (pods.status, pods.verb, pods.resource, pods.namespace) == (kube.FORBIDDEN, "list", "pods", NS)
        assert pods.user == "system:serviceaccount:default:readonly"
        assert "escalate to an admin" in pods.message.lower() and "`list` `pods`" in pods.message
        dep = c.deployment(NS, APP).finding
        assert (dep.verb, dep.resource) == ("get", "deployments.apps")
        net = c.network_policies(NS).finding
        assert (net.verb, net.resource) == ("list", "networkpolicies.networking.k8s.io")
    with kube.connect(str(emu.write_kubeconfig(tmp_path / "viewer", user="viewer")), timeout_s=TIMEOUT) as c:
        assert c.pods(NS).ok and c.error_logs(NS).ok
        sec = c.secret_fingerprint(NS).finding
        assert (sec.status, sec.verb, sec.resource) == (kube.FORBIDDEN, "get", "secrets")


def test_unreachable_server_is_a_finding_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}"
    with socket.socket() as hole:  # accepts connections (kernel backlog), never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        black_hole = f"http://127.0.0.1:{hole.getsockname()[1]}"
        for label, server in (("refused", refused), ("black hole", black_hole)):
            path = _kubeconfig_for(tmp_path / f"kc-{label.replace(' ', '-')}", server)
            t0 = time.monotonic()
            with kube.connect(path, timeout_s=TIMEOUT) as c:
                for name in ("pods", "error_logs", "events"):
                    r = getattr(c, name)()
                    assert r.finding.status == kube.UNREACHABLE, (label, name, r.finding)
                    assert "unavailable" in r.finding.message and r.elapsed_s < TIMEOUT + 1, (label, name)
            assert label != "refused" or time.monotonic() - t0 < 1.0
        out = kube.recent_errors(_kubeconfig_for(tmp_path / "kc-r", black_hole), timeout_s=TIMEOUT)
        assert out["status"] == "unreachable" and out["elapsed_s"] < TIMEOUT + 1


def test_a_hanging_api_server_is_bounded(emu: KubeEmulator, cluster: kube.Cluster) -> None:
    cluster.timeout_s = TIMEOUT
    emu.set_mode("hang")
    t0 = time.monotonic()
    r = cluster.error_logs(NS, f"app={APP}")
    assert r.finding.status == kube.UNREACHABLE and time.monotonic() - t0 < TIMEOUT + 1
    emu.set_mode("error")
    r = cluster.events(NS)
    assert r.finding.status == kube.ERROR and r.finding.http_status == 500 and "unavailable" in r.finding.message


def test_configuration_problems_are_findings(emu: KubeEmulator, kubeconfig: str, tmp_path: Path) -> None:
    missing = kube.connect(str(tmp_path / "nope"), timeout_s=TIMEOUT)
    assert missing.finding is not None and missing.finding.status == kube.ERROR
    r = missing.pods()
    assert r.finding.status == kube.ERROR and r.kubectl.startswith(f"kubectl --kubeconfig {tmp_path / 'nope'} ")
    wrong_ctx = kube.connect(kubeconfig, context="prod", timeout_s=TIMEOUT)
    assert wrong_ctx.finding is not None and "prod" in wrong_ctx.finding.message
    with kube.connect(kubeconfig, timeout_s=TIMEOUT) as c:
        nf = c.deployment(NS, "no-such-deployment").finding
        assert nf.status == kube.NOT_FOUND and nf.http_status == 404 and "no-such-deployment" in nf.message
    with pytest.raises(params.ParameterError):
        kube.connect(kubeconfig).pods("Not A Namespace")
    assert emu.writes() == []


def test_scrub_and_secret_looking() -> None:
    assert kube.scrub("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [REDACTED]"
    assert "hunter2hunter2" not in kube.scrub('{"api_key": "hunter2hunter2"}')
    assert kube.scrub("postgres://app:s3cretpass@db:5432/x") == "postgres://app:[REDACTED]@db:5432/x"
    assert kube.secret_looking("SENTRY_TOKEN") and kube.secret_looking("DB_PASSWORD")
    assert kube.secret_looking("UPSTREAM", "sk-abcdef0123456789") and not kube.secret_looking("MISTRAL_TIMEOUT", "60000")
    assert not kube.secret_looking("MISTRAL_MODEL", "mistral-small-latest")
