"""The embedded Kubernetes API: the official client, unmodified, over real HTTP to the emulator."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from runbook_lib.sim import kube as simkube
from runbook_lib.sim.kube import KubeEmulator

NS = "default"
APP = "mistral-service"


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


def _api(emu: KubeEmulator, tmp_path: Path, user: str = "ok", retries: int | None = None) -> client.ApiClient:
    path = emu.write_kubeconfig(tmp_path / f"kubeconfig-{user}", user=user)
    cfg = type.__call__(client.Configuration)
    config.load_kube_config(str(path), client_configuration=cfg, persist_config=False)
    cfg.retries = retries
    return client.ApiClient(cfg)


@pytest.fixture
def api(emu: KubeEmulator, tmp_path: Path) -> Iterator[client.ApiClient]:
    a = _api(emu, tmp_path)
    yield a
    a.close()


def _app_env(dep: Any) -> dict[str, Any]:
    app = next(c for c in dep.spec.template.spec.containers if c.name == "app")
    return {e.name: e for e in app.env}


# -- seeded world ------------------------------------------------------------------------------

def pod_log(core: Any, *args: Any, **kwargs: Any) -> str:
    """The log text as the server sent it: the kubernetes client 36 turns a preloaded text body into
    "b'...'" (str of bytes), so read the raw body, as runbook_lib.kube does."""
    return core.read_namespaced_pod_log(*args, _preload_content=False, **kwargs).data.decode()


def test_seeded_objects_deserialise_into_the_official_models(emu: KubeEmulator, api: client.ApiClient) -> None:
    core, apps, net = client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)

    pods = core.list_namespaced_pod(NS, label_selector=f"app={APP}")
    assert pods.kind == "PodList" and len(pods.items) == 2
    for p in pods.items:
        assert p.metadata.uid and p.metadata.resource_version and p.metadata.creation_timestamp
        assert [c.name for c in p.spec.containers] == ["app", "proxy"]
        assert p.status.phase == "Running"
    assert sorted(cs.restart_count for p in pods.items for cs in p.status.container_statuses if cs.name == "app") == [0, 3]

    dep = apps.read_namespaced_deployment(APP, NS)
    assert dep.spec.replicas == 2 and dep.metadata.generation == 2 and dep.status.observed_generation == 2
    env = _app_env(dep)
    assert env["MISTRAL_API_KEY"].value_from.secret_key_ref.name == "mistral-secrets"
    assert env["MISTRAL_API_KEY"].value_from.secret_key_ref.key == "api-key"
    assert {"MISTRAL_TIMEOUT", "MAX_CONCURRENT_REQUESTS"} <= set(env)
    assert env["SENTRY_TOKEN"].value == emu.sentry_token

    rss = apps.list_namespaced_replica_set(NS, label_selector=f"app={APP}").items
    revisions = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs for rs in rss}
    assert set(revisions) == {"1", "2"}
    assert revisions["2"].spec.replicas == 2 and revisions["1"].spec.replicas == 0
    assert all(rs.metadata.owner_references[0].uid == dep.metadata.uid for rs in rss)

    events = core.list_namespaced_event(NS).items
    assert any(e.type == "Warning" and e.reason == "BackOff" and e.count == 7 for e in events)
    assert any(e.type == "Normal" for e in events)
    assert any(e.last_timestamp is None and e.event_time is not None for e in events)  # events.k8s.io style

    secret = core.read_namespaced_secret("mistral-secrets", NS)
    assert base64.b64decode(secret.data["api-key"]).decode() == emu.api_key
    assert secret.string_data is None

    pols = {p.metadata.name: p for p in net.list_namespaced_network_policy(NS).items}
    egress = pols[f"{APP}-egress"].spec
    assert egress.policy_types == ["Egress"] and egress.egress[0].to[0].ip_block.cidr == "10.0.0.0/8"
    assert core.read_namespace(NS).status.phase == "Active"
    assert client.VersionApi(api).get_code().major == "1"


def test_label_and_field_selectors_are_honoured(emu: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)

    def count(**kw: Any) -> int:
        return len(core.list_namespaced_pod(NS, **kw).items)

    assert count() == 2
    assert count(label_selector=f"app={APP}") == 2
    assert count(label_selector=f"app=={APP}") == 2
    assert count(label_selector="app=other") == 0
    assert count(label_selector=f"app!={APP}") == 0
    assert count(label_selector=f"app in (x,{APP})") == 2
    assert count(label_selector=f"app notin ({APP})") == 0
    assert count(label_selector="app") == 2
    assert count(label_selector="!app") == 0
    assert count(label_selector=f"app={APP},pod-template-hash") == 2
    name = emu.pod_names()[0]
    assert [p.metadata.name for p in core.list_namespaced_pod(NS, field_selector=f"metadata.name={name}").items] == [name]
    assert len(core.list_pod_for_all_namespaces(label_selector=f"app={APP}").items) == 2
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(NS, label_selector="app in (")
    assert exc.value.status == 400


# -- logs ---------------------------------------------------------------------------------------------
def test_logs_are_text_plain_with_the_real_options(emu: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    pod = emu.pod_names()[0]
    raw = core.read_namespaced_pod_log(pod, NS, container="app", _preload_content=False)
    assert raw.headers["Content-Type"].startswith("text/plain")
    full = pod_log(core, pod, NS, container="app")
    assert isinstance(full, str)
    assert full.splitlines() == [line for _, line in emu.container_log(pod, "app")]
    recent = pod_log(core, pod, NS, container="app", since_seconds=300).splitlines()
    assert 0 < len(recent) < len(full.splitlines())
    assert len(pod_log(core, pod, NS, container="proxy", tail_lines=3).splitlines()) == 3
    stamped = pod_log(core, pod, NS, container="app", tail_lines=1, timestamps=True)
    stamp, _, line = stamped.rstrip("\n").partition(" ")
    assert stamp.endswith("Z") and len(stamp) == 30 and json.loads(line)["level"] in ("info", "error")

    with pytest.raises(ApiException) as exc:
        pod_log(core, pod, NS)
    assert exc.value.status == 400
    assert json.loads(exc.value.body)["message"] == (
        f"a container name must be specified for pod {pod}, choose one of: [app proxy]")
    with pytest.raises(ApiException) as exc:
        pod_log(core, pod, NS, container="sidecar")
    assert exc.value.status == 400

    restarted = next(p for p in emu.pod_names() if p != pod)
    prev = pod_log(core, restarted, NS, container="app", previous=True)
    assert "worker exited" in prev
    with pytest.raises(ApiException) as exc:
        pod_log(core, pod, NS, container="app", previous=True)
    assert exc.value.status == 400 and "previous terminated container" in json.loads(exc.value.body)["message"]


def test_log_source_lines_are_split_across_the_pods(tmp_path: Path) -> None:
    now = time.time()
    lines = [json.dumps({"ts": simkube._iso(now - 30 + i), "level": "error" if i % 4 == 0 else "info",
                         "msg": f"call {i}", "code": "429" if i % 4 == 0 else "200"}) for i in range(20)]
    with KubeEmulator(log_source=lambda: list(lines)) as emu:
        api = _api(emu, tmp_path)
        core = client.CoreV1Api(api)
        served = []
        for pod in emu.pod_names():
            text = pod_log(core, pod, NS, container="app")
            served += [ln for ln in text.splitlines() if ln.startswith("{")
                       and json.loads(ln).get("msg", "").startswith("call ")]
            assert "[info][main]" in pod_log(core, pod, NS, container="proxy")
        assert sorted(served) == sorted(lines)  # each line served once, by one pod
        lines.append(json.dumps({"ts": simkube._iso(time.time()), "level": "error", "msg": "call new"}))
        assert sum("call new" in pod_log(core, p, NS, container="app") for p in emu.pod_names()) == 1
        api.close()


# -- request log and auth ---------------------------------------------------------------------------------
def test_every_request_is_logged(emu: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    emu.clear_requests()
    core.list_namespaced_pod(NS, label_selector=f"app={APP}")
    pod_log(core, emu.pod_names()[0], NS, container="app", since_seconds=300)
    reqs = emu.requests
    assert [(r["method"], r["path"]) for r in reqs] == [
        ("GET", f"/api/v1/namespaces/{NS}/pods"), ("GET", f"/api/v1/namespaces/{NS}/pods/{emu.pod_names()[0]}/log")]
    assert reqs[0]["query"] == {"labelSelector": f"app={APP}"}
    assert reqs[1]["query"] == {"container": "app", "sinceSeconds": "300"}
    assert {r["user"] for r in reqs} == {"ok"} and {r["status"] for r in reqs} == {200}
    assert emu.writes() == []
    client.AppsV1Api(api).patch_namespaced_deployment(APP, NS, {"metadata": {"labels": {"team": "ai"}}})
    assert [(w["method"], w["dry_run"]) for w in emu.writes()] == [("PATCH", False)]


def test_expired_token_gets_401_everywhere(emu: KubeEmulator, tmp_path: Path) -> None:
    api = _api(emu, tmp_path, "expired")
    for call in (lambda: client.CoreV1Api(api).list_namespaced_pod(NS),
                 lambda: client.VersionApi(api).get_code(),
                 lambda: client.AppsV1Api(api).read_namespaced_deployment(APP, NS)):
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == 401
        assert json.loads(exc.value.body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                              "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert {r["user"] for r in emu.requests} == {"expired"}


def test_forbidden_user_gets_the_real_403_message(emu: KubeEmulator, tmp_path: Path) -> None:
    api = _api(emu, tmp_path, "forbidden")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]  # discovery stays allowed
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).list_namespaced_pod(NS)
    body = json.loads(exc.value.body)
    assert exc.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('pods is forbidden: User "system:serviceaccount:default:readonly" cannot list '
                               'resource "pods" in API group "" in the namespace "default"')
    assert body["details"] == {"kind": "pods"}
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).read_namespaced_deployment(APP, NS)
    body = json.loads(exc.value.body)
    assert body["message"] == ('deployments.apps "mistral-service" is forbidden: User '
                               '"system:serviceaccount:default:readonly" cannot get resource "deployments" in API '
                               'group "apps" in the namespace "default"')
    assert body["details"] == {"name": APP, "group": "apps", "kind": "deployments"}


def test_viewer_reads_but_neither_secrets_nor_writes(emu: KubeEmulator, tmp_path: Path) -> None:
    api = _api(emu, tmp_path, "viewer")
    core = client.CoreV1Api(api)
    assert len(core.list_namespaced_pod(NS).items) == 2
    assert pod_log(core, emu.pod_names()[0], NS, container="app", tail_lines=1)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("mistral-secrets", NS)
    assert exc.value.status == 403 and 'cannot get resource "secrets"' in json.loads(exc.value.body)["message"]
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).patch_namespaced_deployment(APP, NS, {"spec": {"replicas": 3}})
    assert exc.value.status == 403 and 'cannot patch resource "deployments"' in json.loads(exc.value.body)["message"]
    assert emu.get("apps/v1/deployments", APP)["spec"]["replicas"] == 2


# -- writes --------------------------------------------------------------------------------------------
def test_strategic_merge_patch_merges_env_by_name_and_rolls_out(emu: KubeEmulator, api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    before = apps.read_namespaced_deployment(APP, NS)
    old_pods = set(emu.pod_names())
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
        {"name": "MAX_CONCURRENT_REQUESTS", "value": "5"}, {"name": "RATE_LIMIT_MODE", "value": "queue"}]}]}}}}
    after = apps.patch_namespaced_deployment(APP, NS, patch)
    env = _app_env(after)
    assert env["MAX_CONCURRENT_REQUESTS"].value == "5" and env["RATE_LIMIT_MODE"].value == "queue"
    assert set(_app_env(before)) | {"RATE_LIMIT_MODE"} == set(env)  # nothing else lost
    assert env["MISTRAL_API_KEY"].value_from.secret_key_ref.name == "mistral-secrets"
    assert [c.name for c in after.spec.template.spec.containers] == ["app", "proxy"]
    proxy_before = before.spec.template.spec.containers[1].to_dict()
    assert after.spec.template.spec.containers[1].to_dict() == proxy_before
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)

    dep = apps.read_namespaced_deployment(APP, NS)
    assert dep.metadata.generation == 3 and dep.status.observed_generation == 3
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    rss = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs
           for rs in apps.list_namespaced_replica_set(NS).items}
    assert set(rss) == {"1", "2", "3"} and rss["3"].spec.replicas == 2 and rss["2"].spec.replicas == 0
    new_pods = set(emu.pod_names())
    assert len(new_pods) == 2 and not new_pods & old_pods
    for p in core.list_namespaced_pod(NS, label_selector=f"app={APP}").items:
        assert {e.name: e.value for e in p.spec.containers[0].env}["MAX_CONCURRENT_REQUESTS"] == "5"
    assert any(e.reason == "ScalingReplicaSet" and rss["3"].metadata.name in e.message
               for e in core.list_namespaced_event(NS).items)

    # `kubectl set env ... RATE_LIMIT_MODE-` sends a $patch: delete
    apps.patch_namespaced_deployment(APP, NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "RATE_LIMIT_MODE", "$patch": "delete"}]}]}}}})
    assert "RATE_LIMIT_MODE" not in _app_env(apps.read_namespaced_deployment(APP, NS))

    # rollout undo to revision 2: its ReplicaSet comes back as the newest revision
    template = client.ApiClient().sanitize_for_serialization(rss["2"].spec.template)
    template["metadata"]["labels"].pop("pod-template-hash")
    apps.patch_namespaced_deployment(APP, NS, [{"op": "replace", "path": "/spec/template", "value": template}],
                                     _content_type="application/json-patch+json")
    revived = apps.read_namespaced_replica_set(rss["2"].metadata.name, NS)
    assert revived.metadata.annotations["deployment.kubernetes.io/revision"] == "5"
    assert revived.metadata.annotations["deployment.kubernetes.io/revision-history"] == "2"
    assert revived.spec.replicas == 2


def test_json_merge_patch_replaces_lists_as_the_real_server(emu: KubeEmulator, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment(APP, NS)
    containers = client.ApiClient().sanitize_for_serialization(dep.spec.template.spec.containers)
    containers[0]["env"] = [{"name": "ONLY", "value": "1"}]
    apps.patch_namespaced_deployment(APP, NS, {"spec": {"template": {"spec": {"containers": containers}}}},
                                     _content_type="application/merge-patch+json")
    assert list(_app_env(apps.read_namespaced_deployment(APP, NS))) == ["ONLY"]


def test_dry_run_all_answers_but_stores_nothing(emu: KubeEmulator, api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    before = emu.get("apps/v1/deployments", APP)
    answer = apps.patch_namespaced_deployment(APP, NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "MISTRAL_FALLBACK", "value": "true"}]}]}}}}, dry_run="All")
    assert _app_env(answer)["MISTRAL_FALLBACK"].value == "true"
    assert emu.get("apps/v1/deployments", APP) == before
    assert len(emu.list("apps/v1/replicasets")) == 2

    created = core.create_namespaced_secret(NS, {"metadata": {"name": "rotated"}, "stringData": {"api-key": "new"}},
                                            dry_run="All")
    assert created.data == {"api-key": base64.b64encode(b"new").decode()}
    assert emu.get("v1/secrets", "rotated") is None
    pod = emu.pod_names()[0]
    core.delete_namespaced_pod(pod, NS, dry_run="All")
    assert pod in emu.pod_names()
    assert [(w["method"], w["dry_run"]) for w in emu.writes()] == [("PATCH", True), ("POST", True), ("DELETE", True)]
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment(APP, NS, {"spec": {"replicas": 1}}, dry_run="Server")
    assert exc.value.status == 400


def test_create_put_and_delete(emu: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    secret = core.create_namespaced_secret(NS, {"metadata": {"name": "extra"}, "stringData": {"k": "v1"}})
    assert secret.data == {"k": base64.b64encode(b"v1").decode()} and secret.metadata.uid
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(NS, {"metadata": {"name": "extra"}, "stringData": {"k": "v1"}})
    assert exc.value.status == 409

    body = client.ApiClient().sanitize_for_serialization(secret)
    body["stringData"] = {"k": "v2"}
    replaced = core.replace_namespaced_secret("extra", NS, body)
    assert replaced.data["k"] == base64.b64encode(b"v2").decode()
    assert replaced.metadata.uid == secret.metadata.uid
    with pytest.raises(ApiException) as exc:  # stale resourceVersion
        core.replace_namespaced_secret("extra", NS, body)
    assert exc.value.status == 409 and "the object has been modified" in json.loads(exc.value.body)["message"]

    core.delete_namespaced_secret("extra", NS)
    assert emu.get("v1/secrets", "extra") is None
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("extra", NS)
    assert exc.value.status == 404 and json.loads(exc.value.body)["message"] == 'secrets "extra" not found'

    victim = emu.pod_names()[0]  # the ReplicaSet replaces a deleted pod
    core.delete_namespaced_pod(victim, NS)
    assert len(emu.pod_names()) == 2 and victim not in emu.pod_names()

    with pytest.raises(ApiException) as exc:  # minimal validation
        client.AppsV1Api(api).patch_namespaced_deployment(APP, NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "MISTRAL_API_KEY", "value": "literal"}]}]}}}})
    assert exc.value.status == 422
    assert "may not be specified when `value` is not empty" in json.loads(exc.value.body)["message"]


def test_watch_streams_the_selected_objects(emu: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    w = watch.Watch()
    seen = [(ev["type"], ev["object"].metadata.name)
            for ev in w.stream(core.list_namespaced_pod, NS, label_selector=f"app={APP}", timeout_seconds=1,
                               _request_timeout=5)]
    assert sorted(seen) == sorted(("ADDED", name) for name in emu.pod_names())


# -- faults, lifecycle, command line ------------------------------------------------------------------------
def test_hang_mode_holds_requests_and_stop_is_bounded(tmp_path: Path) -> None:
    emu = KubeEmulator().start()
    port = emu.port
    try:
        api = _api(emu, tmp_path, retries=0)
        emu.set_mode("hang")
        t0 = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - urllib3's read timeout
            client.CoreV1Api(api).list_namespaced_pod(NS, _request_timeout=0.5)
        assert time.monotonic() - t0 < 1.5
        emu.set_mode("error")
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(api).list_namespaced_pod(NS, _request_timeout=2)
        assert exc.value.status == 500
        emu.set_mode("hang")
    finally:
        t0 = time.monotonic()
        emu.stop()
        assert time.monotonic() - t0 < 3
    with socket.socket() as s:  # nothing listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_cli_main_serves_and_writes_a_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kc" / "config"
    assert simkube.cli_main(["--port", "0", "--kubeconfig-out", str(out), "--run-for", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "Kubernetes API emulator: https://127.0.0.1:" in printed and str(out) in printed
    cfg = json.loads(out.read_text())
    assert cfg["current-context"] == "embedded" and cfg["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert "BEGIN CERTIFICATE" in base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
