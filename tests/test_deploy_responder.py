"""deploy/kubernetes/rbac-responder.yaml grants exactly what the approved mitigations use.

Every diagnosis that can apply a change is run with apply_changes=True against the Kubernetes
emulator (which records each request); every request is then checked against the read-only Role
plus the responder Role (verb, resource and, for writes, the object's name). A runbook writing to
something the Role does not name fails here, and so does a Role granting writes nobody makes.
The real kubectl also accepts the objects (--dry-run=server).
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_deploy_manifests import all_docs, docs

pytestmark = pytest.mark.notebook
RESPONDER = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "rbac-responder.yaml"
VERB = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def _grants() -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, name or '*') granted by the read Role and the responder Role."""
    roles = [d for d in all_docs() if d["kind"] == "Role"
             and d["metadata"]["name"] in ("mistral-runbooks-read", "mistral-runbooks-responder")]
    assert len(roles) == 2, [d["metadata"]["name"] for d in roles]  # serve's own Roles are not the responders'

    out = set()
    for role in roles:
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        for name in rule.get("resourceNames") or ["*"]:
                            out.add((g, r, v, name))
    return out


def _needed(req: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """What one recorded request needs: (group, resource, verb, name); None for discovery and self-review."""
    parts = req["path"].strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # discovery: granted to every authenticated user
    if group == "authentication.k8s.io" and rest == ["selfsubjectreviews"]:
        return None  # allowed to every authenticated user (system:basic-user)
    assert rest[:1] == ["namespaces"] and len(rest) >= 3, f"cluster-wide request {req['path']}"
    resource, tail = rest[2], rest[3:]
    name = tail[0] if tail else "*"
    if len(tail) == 2:
        resource = f"{resource}/{tail[1]}"
    verb = VERB[req["method"]]
    if req["method"] == "GET" and not tail:
        verb = "watch" if req["query"].get("watch") in ("1", "true") else "list"
    return group, resource, verb, name


def test_every_request_of_the_approved_mitigations_is_granted(cluster_stack, run_runbook, monkeypatch):
    st = cluster_stack
    new_key = "sim-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", new_key)
    runs = []
    st.set_mode("rate_limited")
    runs.append(run_runbook("diagnose_rate_limit", st, apply_changes=True, operator="alice",
                            max_concurrent_requests=3))
    st.set_mode("server_error", status=500)
    runs.append(run_runbook("diagnose_server_error", st, apply_changes=True, operator="alice", monitor_max_s=0.5))
    st.set_mode("ok")
    st.mistral.set_api_keys([new_key])  # the old key revoked at Mistral: diagnose_auth rotates
    runs.append(run_runbook("diagnose_auth", st, apply_changes=True, operator="alice"))
    assert all(r.ok for r in runs), [r.error for r in runs]
    grants = _grants()
    writes, problems = set(), []
    for req in st.kube.requests:
        need = _needed(req)
        if need is None:
            continue
        group, resource, verb, name = need
        if (group, resource, verb, "*") not in grants and (group, resource, verb, name) not in grants:
            problems.append(f"{req['method']} {req['path']} needs {verb} {resource}/{name}")
        if verb not in ("get", "list", "watch"):
            writes.add((group, resource, verb, name))
    assert not problems, problems
    # every write the responder Role allows is used by some mitigation (nothing granted "just in case")
    allowed_writes = {g for g in grants if g[2] not in ("get", "list", "watch")}
    assert writes == allowed_writes, (writes, allowed_writes)


def test_kubectl_accepts_the_responder_objects(tmp_path):
    from runbook_lib.sim.kube import KubeEmulator

    with KubeEmulator(api_key="x") as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                              "apply", "--dry-run=server", "-f", str(RESPONDER)], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    assert len([x for x in out.stdout.splitlines() if x.endswith("(server dry run)")]) == len(docs(RESPONDER)) == 3
