"""runbook_lib.kube.write (the mitigations) against the embedded cluster: real HTTP, the official client, no mocks."""

from __future__ import annotations

import base64
import copy
import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import kube
from runbook_lib.kube import write as remediate
from runbook_lib.secrets import fingerprint
from runbook_lib.sim.kube import KubeEmulator

NS, APP, DEP = "default", "mistral-service", "apps/v1/deployments"


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


def _connect(emu: KubeEmulator, tmp_path: Path, user: str = "ok", timeout_s: float = 3.0) -> kube.Cluster:
    return kube.connect(str(emu.write_kubeconfig(tmp_path / f"kubeconfig-{user}", user=user)), timeout_s=timeout_s)


@pytest.fixture
def cluster(emu: KubeEmulator, tmp_path: Path) -> Iterator[kube.Cluster]:
    with _connect(emu, tmp_path) as c:
        yield c


def _env(emu: KubeEmulator, container: str = "app") -> dict[str, Any]:
    dep = emu.get(DEP, APP)
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def _snapshot(emu: KubeEmulator) -> Any:
    return copy.deepcopy([emu.get(DEP, APP), emu.get("v1/secrets", "mistral-secrets"), emu.list("apps/v1/replicasets")])


def test_dry_runs_change_nothing(emu: KubeEmulator, cluster: kube.Cluster) -> None:
    before = _snapshot(emu)
    emu.clear_requests()
    env = remediate.plan_env(cluster, NS, APP, {"MAX_CONCURRENT_REQUESTS": "3", "RATE_LIMIT_MODE": "queue"})
    restart = remediate.rollout_restart(cluster, NS, APP)
    undo = remediate.rollout_undo(cluster, NS, APP)
    for ch in (env, restart, undo):
        assert ch.ok and ch.dry_run_ok and not ch.applied and ch.verified is None, ch.to_dict()
        assert ch.who == "embedded-ok" and ch.at.endswith("Z")
    assert _snapshot(emu) == before
    writes = emu.writes()
    assert len(writes) == 3 and all(w["query"].get("dryRun") == "All" for w in writes)
    assert (f"set env deployment/{APP} -n default -c app MAX_CONCURRENT_REQUESTS=3 RATE_LIMIT_MODE=queue "
            "--field-manager=mistral-runbooks && ") in env.kubectl  # the real kubectl runs it: test_kubectl_real.py
    assert {"field": "containers[app].env[MAX_CONCURRENT_REQUESTS]", "before": "20", "after": "3"} in env.diff
    assert {"field": "containers[app].env[RATE_LIMIT_MODE]", "before": None, "after": "queue"} in env.diff
    assert len(env.diff) == 2  # changed fields only
    assert f"rollout restart deployment/{APP} -n default --field-manager=mistral-runbooks && " in restart.kubectl
    assert [d["field"] for d in restart.diff] == [f"spec.template.metadata.annotations[{remediate.RESTARTED_AT}]"]
    assert f"rollout undo deployment/{APP} -n default && " in undo.kubectl
    assert {"field": "containers[app].image", "before": "registry.example.com/mistral-service:1.4.2",
            "after": "registry.example.com/mistral-service:1.4.1"} in undo.diff


def test_env_apply_merges_by_name_and_undo_restores(emu: KubeEmulator, cluster: kube.Cluster) -> None:
    original = _env(emu)
    proxy = _env(emu, "proxy")
    ch = remediate.plan_env(cluster, NS, APP, {"MAX_CONCURRENT_REQUESTS": "3", "MISTRAL_FALLBACK": "true"},
                            apply_changes=True, operator="alice")
    assert ch.ok and ch.applied and ch.verified, ch.to_dict()
    assert ch.who == "alice" and ch.revision_before == "2" and ch.revision_after == "3"
    assert ch.rollout and ch.rollout["done"]
    now = _env(emu)
    assert now["MAX_CONCURRENT_REQUESTS"] == "3" and now["MISTRAL_FALLBACK"] == "true"
    assert {k: v for k, v in now.items() if k not in ("MAX_CONCURRENT_REQUESTS", "MISTRAL_FALLBACK")} == \
        {k: v for k, v in original.items() if k != "MAX_CONCURRENT_REQUESTS"}
    assert _env(emu, "proxy") == proxy
    assert ch.inverse == {"MAX_CONCURRENT_REQUESTS": "20", "MISTRAL_FALLBACK": None}
    assert ch.undo.endswith("-c app MAX_CONCURRENT_REQUESTS=20 MISTRAL_FALLBACK- --field-manager=mistral-runbooks")
    # execute the undo command as the inverse change
    args = shlex.split(ch.undo)
    inverse = {a[:-1] if a.endswith("-") else a.split("=", 1)[0]: None if a.endswith("-") else a.split("=", 1)[1]
               for a in args[args.index("-c") + 2:] if not a.startswith("--")}
    assert inverse == ch.inverse
    back = remediate.plan_env(cluster, NS, APP, inverse, container="app", apply_changes=True)
    assert back.ok and back.verified
    assert _env(emu) == original
    json.dumps(ch.to_dict())


def test_rotate_secret_never_records_a_key(emu: KubeEmulator, cluster: kube.Cluster,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    old = emu.api_key
    new = "sim-new-" + "Zq7" * 10
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new)
    dry = remediate.rotate_secret(cluster, NS, "mistral-secrets", "api-key", "NEW_MISTRAL_API_KEY")
    assert dry.ok and dry.dry_run_ok and not dry.applied
    stored = emu.get("v1/secrets", "mistral-secrets")["data"]["api-key"]
    assert base64.b64decode(stored).decode() == old
    ch = remediate.rotate_secret(cluster, NS, "mistral-secrets", "api-key", "NEW_MISTRAL_API_KEY",
                                 apply_changes=True)
    assert ch.ok and ch.applied and ch.verified, ch.to_dict()
    assert base64.b64decode(emu.get("v1/secrets", "mistral-secrets")["data"]["api-key"]).decode() == new
    assert ch.kubectl.endswith("| kubectl --kubeconfig " + cluster.kubeconfig + " --context embedded patch secret "
                               "mistral-secrets -n default --type=merge --field-manager=mistral-runbooks "
                               "--patch-file=/dev/stdin") and "apply" not in ch.kubectl
    assert ch.diff[0]["after"] == f"{fingerprint(new)}, {len(new)} chars"
    for record in (dry, ch):
        text = json.dumps(record.to_dict()) + repr(record)
        for secret in (old, new, base64.b64encode(new.encode()).decode(), base64.b64encode(old.encode()).decode()):
            assert not any(secret[i:i + 8] in text for i in range(len(secret) - 7))


def test_restart_bumps_revision_and_undo_restores_previous(emu: KubeEmulator, cluster: kube.Cluster) -> None:
    rev1_env = None
    for rs in emu.list("apps/v1/replicasets"):
        if rs["metadata"]["annotations"][remediate.REVISION] == "1":
            rev1_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in rs["spec"]["template"]["spec"]
                        ["containers"][0]["env"]}
    r = remediate.rollout_restart(cluster, NS, APP, apply_changes=True)
    assert r.ok and r.verified and (r.revision_before, r.revision_after) == ("2", "3")
    assert r.undo.endswith(f"rollout undo deployment/{APP} -n default --to-revision=2")
    assert emu.get(DEP, APP)["spec"]["template"]["metadata"]["annotations"][remediate.RESTARTED_AT] == r.at
    u = remediate.rollout_undo(cluster, NS, APP, to_revision=1, apply_changes=True)
    assert u.ok and u.verified and (u.revision_before, u.revision_after) == ("3", "4"), u.to_dict()
    assert _env(emu) == rev1_env and _env(emu)["MISTRAL_TIMEOUT"] == "10000"
    assert u.undo.endswith("--to-revision=3")
    # the plain undo goes back to the revision before the current one (3: the restart)
    u2 = remediate.rollout_undo(cluster, NS, APP, apply_changes=True)
    assert u2.ok and u2.verified and u2.revision_after == "5"
    assert remediate.RESTARTED_AT in emu.get(DEP, APP)["spec"]["template"]["metadata"]["annotations"]


def test_rollout_that_does_not_complete_is_reported(emu: KubeEmulator, cluster: kube.Cluster) -> None:
    from kubernetes import client, config

    api = client.AppsV1Api(config.new_client_from_config(cluster.kubeconfig, persist_config=False))
    api.patch_namespaced_deployment(APP, NS, {"spec": {"paused": True}})
    t0 = time.monotonic()
    r = remediate.wait_for_rollout(cluster, NS, APP, timeout_s=0.6)  # the emulator does not observe a pause
    assert time.monotonic() - t0 < 1.0
    assert r.data["done"] is False and r.finding.status == remediate.NOT_DONE and "0.6 s" in r.finding.message
    ch = remediate.plan_env(cluster, NS, APP, {"MISTRAL_TIMEOUT": "5000"}, apply_changes=True, timeout_s=1.0)
    assert ch.applied and ch.verified is False and ch.finding.status == remediate.NOT_DONE, ch.to_dict()
    assert "did not complete" in ch.finding.message


def test_forbidden_expired_unreachable(emu: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sim-new-key-value-123456")
    with _connect(emu, tmp_path, "viewer") as viewer:
        ch = remediate.plan_env(viewer, NS, APP, {"RATE_LIMIT_MODE": "queue"}, apply_changes=True)
        f = ch.finding
        assert f and f.status == kube.FORBIDDEN and f.verb == "patch" and f.resource == "deployments.apps"
        assert "escalate" in f.message.lower() and "`edit`" in f.message and not ch.applied
        s = remediate.rotate_secret(viewer, NS, "mistral-secrets", "api-key", "NEW_MISTRAL_API_KEY",
                                    apply_changes=True)
        assert s.finding.status == kube.FORBIDDEN and s.finding.resource == "secrets"
        assert "escalate" in s.finding.message.lower()
    with _connect(emu, tmp_path, "expired") as expired:
        ch = remediate.rollout_restart(expired, NS, APP, apply_changes=True)
        assert ch.finding.status == kube.UNAUTHORIZED and "re-authenticate" in ch.finding.message.lower()
    writes = emu.writes()
    assert writes and all(w["query"].get("dryRun") == "All" or w["status"] in (401, 403) for w in writes)
    with _connect(emu, tmp_path, "ok") as c:
        emu.set_mode("hang")
        try:
            t0 = time.monotonic()
            ch = remediate.rollout_undo(c, NS, APP, apply_changes=True, timeout_s=1.0)
            assert time.monotonic() - t0 < 2.0
            assert ch.finding.status == kube.UNREACHABLE and not ch.applied
        finally:
            emu.set_mode("ok")


def test_parameters_are_checked(cluster: kube.Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(remediate.params.ParameterError):
        remediate.rotate_secret(cluster, NS, "mistral-secrets", "api-key", "NOPE_KEY")
    with pytest.raises(remediate.params.ParameterError):
        remediate.rotate_secret(cluster, NS, "mistral-secrets", "api-key", "sk-this-is-a-pasted-key-1234567")
    with pytest.raises(remediate.params.ParameterError):  # comes from a Secret: rotate it instead
        remediate.plan_env(cluster, NS, APP, {"MISTRAL_API_KEY": "x"})
