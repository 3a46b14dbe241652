"""Every kubectl command the runbooks print, run with the real kubectl against the emulator over HTTPS.

The commands are taken from what the code printed in a real run (`KubeResult.kubectl`,
`Change.kubectl`/`.undo`, the logs' `kubectl_previous`), never retyped here. Reads must return the
objects the runbook showed; writes, run with `--dry-run=server`, must describe the change the runbook
made (and the emulator, honouring dryRun=All, must store nothing). `kubectl rollout restart` has no
dry run in kubectl: it runs for real on a throwaway emulator and is compared with the runbook's dry run.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib import kube
from runbook_lib.kube import write as remediate
from runbook_lib.secrets import fingerprint
from runbook_lib.sim.kube import KubeEmulator

NS, APP, DEP = "default", "mistral-service", "apps/v1/deployments"
CHECKED: list[str] = []  # every command run, for the count printed at the end of each test


@pytest.fixture(scope="module")
def kubectl_bin() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed: make test installs it (scripts/ensure-servers.sh, kubernetes-client)")
        pytest.skip("kubectl not installed (make test installs Debian's kubernetes-client)")
    return path


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def kubeconfig(emu: KubeEmulator, tmp_path: Path) -> str:
    return str(emu.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def cluster(kubeconfig: str) -> Iterator[kube.Cluster]:
    with kube.connect(kubeconfig, timeout_s=5.0) as c:
        yield c


def run_printed(cmd: str, tmp_path: Path, kubeconfig: str, *, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a printed command line in bash (pipefail), each kubectl with its own discovery cache,
    HOME in tmp_path (no ~/.kube of this machine) and KUBECONFIG for the portable (undo) commands."""
    cache = tmp_path / "kube-cache"
    line = re.sub(r"(^|[|&;]\s*)kubectl ", lambda m: f"{m.group(1)}kubectl --cache-dir {cache} ", cmd)
    assert line.count("--cache-dir") == len(re.findall(r"(?:^|[|&;]\s*)kubectl ", cmd)) >= 1, cmd
    full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KUBECONFIG": kubeconfig, **(env or {})}
    done = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, env=full_env,
                          timeout=60)
    CHECKED.append(cmd)
    if check:
        assert done.returncode == 0, f"{cmd}\n{done.stderr}"
    return done


def _table(text: str) -> list[dict[str, str]]:
    """kubectl's table output: columns start where the header's names start."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s\s)|^)\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, starts[1:] + [None], strict=True)]
    return [{n: ln[a:b].strip() for n, a, b in zip(names, starts, starts[1:] + [None], strict=True)}
            for ln in lines[1:]]


def _split(cmd: str) -> list[str]:
    parts = re.split(r" && (?=kubectl )", cmd)
    assert len(parts) >= 1 and all("kubectl " in p for p in parts), cmd
    return parts


# -- reads -----------------------------------------------------------------------------------------
def test_reads_return_what_the_runbook_showed(kubectl_bin: str, emu: KubeEmulator, cluster: kube.Cluster,
                                              kubeconfig: str, tmp_path: Path) -> None:
    before = len(CHECKED)
    pods = cluster.pods()
    assert pods.ok and len(pods.rows) == 2
    shown = {r["name"]: (r["ready"], r["status"], r["restarts"], r["ip"], r["node"]) for r in pods.rows}
    got = {r["NAME"]: (r["READY"], r["STATUS"], int(r["RESTARTS"].split()[0]), r["IP"], r["NODE"])
           for r in _table(run_printed(pods.kubectl, tmp_path, kubeconfig).stdout)}
    assert got == shown

    events = cluster.events()
    assert events.ok and events.rows
    got_ev = sorted((r["TYPE"], r["REASON"], r["OBJECT"], r["MESSAGE"])
                    for r in _table(run_printed(events.kubectl, tmp_path, kubeconfig).stdout))
    assert got_ev == sorted((r["type"], r["reason"], r["object"], r["message"]) for r in events.rows)

    dep = cluster.deployment()
    assert dep.ok
    obj = yaml.safe_load(run_printed(dep.kubectl, tmp_path, kubeconfig).stdout)
    assert obj["metadata"]["uid"] == dep.data["uid"] and obj["spec"]["replicas"] == dep.data["replicas"]
    assert obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == dep.data["revision"]
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert {c["name"]: c["image"] for c in containers} == dep.data["images"]
    for row in dep.rows:  # env: the same variables; literal values equal, or the fingerprint of the hidden one
        c = next(c for c in containers if c["name"] == row["container"])
        var = next(e for e in c.get("env") or [] if e["name"] == row["name"])
        if row.get("redacted"):
            assert fingerprint(var["value"]) == row["fingerprint"]
        elif "value" in var:
            assert var["value"] == row["value"]
    assert sum(len(c.get("env") or []) for c in containers) == len(dep.rows)

    status = cluster.rollout_status()
    out = run_printed(status.kubectl, tmp_path, kubeconfig).stdout.strip()
    assert status.data["done"] and out == f'deployment "{APP}" successfully rolled out'

    hist = cluster.revision_history()
    lines = run_printed(hist.kubectl, tmp_path, kubeconfig).stdout.splitlines()
    rows = [re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in lines[lines.index(next(
        ln for ln in lines if ln.startswith("REVISION"))) + 1:] if ln.strip()]
    assert [(int(r[0]), None if r[1] == "<none>" else r[1]) for r in rows] == \
        [(h["revision"], h["change_cause"]) for h in hist.rows]

    man = cluster.manifests()
    assert man.ok and "replicaset/" in man.kubectl
    listed = yaml.safe_load(run_printed(man.kubectl, tmp_path, kubeconfig).stdout)["items"]
    shown_objs = [man.data["deployment"], *man.data["replicasets"]]
    assert [(o["kind"], o["metadata"]["name"], o["metadata"]["uid"]) for o in listed] == \
        [(k, o["metadata"]["name"], o["metadata"]["uid"]) for k, o in
         zip(["Deployment"] + ["ReplicaSet"] * len(man.data["replicasets"]), shown_objs, strict=True)]
    assert emu.sentry_token not in json.dumps(man.data)  # the runbook's copy is redacted, kubectl's is not

    fp = cluster.secret_fingerprint()
    out = run_printed(fp.kubectl, tmp_path, kubeconfig).stdout.strip()
    assert fp.data["fingerprint"] == "sha256:" + out == fingerprint(emu.api_key)

    pol = cluster.network_policies()
    items = yaml.safe_load(run_printed(pol.kubectl, tmp_path, kubeconfig).stdout)["items"]
    assert sorted(i["metadata"]["name"] for i in items) == sorted(p["name"] for p in pol.data["policies"])

    wait = remediate.wait_for_rollout(cluster, timeout_s=10)
    assert wait.ok and run_printed(wait.kubectl, tmp_path, kubeconfig).stdout.strip() == \
        f'deployment "{APP}" successfully rolled out'
    print(f"\n{len(CHECKED) - before} read commands checked with the real kubectl")


def test_error_logs_command_prints_the_same_lines(kubectl_bin: str, emu: KubeEmulator, cluster: kube.Cluster,
                                                  kubeconfig: str, tmp_path: Path) -> None:
    before = len(CHECKED)
    res = cluster.error_logs(since_s=3600, tail=10_000, previous=True)  # every matching line
    assert res.ok and res.data["lines"]
    out = run_printed(res.kubectl, tmp_path, kubeconfig).stdout.splitlines()
    got = []
    for ln in out:
        m = re.match(r"\[pod/(?P<pod>[^/]+)/(?P<c>[^\]]+)\] (?P<ts>\S+) (?P<line>.*)$", ln)
        assert m, ln
        got.append((m["pod"], m["c"], m["line"]))
    current = [(e["pod"], e["container"], e["line"]) for e in res.data["lines"] if not e["previous"]]
    assert sorted(got) == sorted(current) and len(got) > 10
    assert res.data["kubectl_previous"], "the seeded restarted container has a previous log"
    prev = {(e["pod"], e["container"], e["line"]) for e in res.data["lines"] if e["previous"]}
    got_prev = set()
    for cmd in res.data["kubectl_previous"]:
        pod = cmd.split(" logs -n default ", 1)[1].split()[0]
        c = cmd.split(" -c ", 1)[1].split()[0]
        for ln in run_printed(cmd, tmp_path, kubeconfig).stdout.splitlines():
            got_prev.add((pod, c, ln.split(" ", 1)[1]))
    assert prev and prev == got_prev
    print(f"\n{len(CHECKED) - before} log commands checked with the real kubectl")


# -- writes ----------------------------------------------------------------------------------------------
def _snapshot(emu: KubeEmulator) -> Any:
    return copy.deepcopy([emu.get(DEP, APP), emu.get("v1/secrets", "mistral-secrets"), emu.list("apps/v1/replicasets")])


def _env_of(obj: dict[str, Any], container: str = "app") -> dict[str, Any]:
    c = next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value") for e in c.get("env") or []}


def _dry(cmd: str, tmp_path: Path, kubeconfig: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return json.loads(run_printed(cmd + " --dry-run=server -o json", tmp_path, kubeconfig, env=env).stdout)


def test_writes_dry_run_server_describe_the_same_change(kubectl_bin: str, emu: KubeEmulator, cluster: kube.Cluster,
                                                         kubeconfig: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    before_n = len(CHECKED)
    snap = _snapshot(emu)
    env_change = remediate.plan_env(cluster, NS, APP, {"MAX_CONCURRENT_REQUESTS": "3", "LOG_FORMAT": None,
                                                       "RATE_LIMIT_MODE": "queue"}, incident="INC-7", operator="alice")
    assert env_change.ok and env_change.dry_run_ok and env_change.identity == "kubernetes-admin"
    set_env, annotate = _split(env_change.kubectl)
    after = _env_of(_dry(set_env, tmp_path, kubeconfig))
    for d in env_change.diff:
        var = d["field"].split("env[", 1)[1].rstrip("]")
        assert after.get(var) == d["after"], d
    assert "LOG_FORMAT" not in after and after["MAX_CONCURRENT_REQUESTS"] == "3"
    annotated = _dry(annotate, tmp_path, kubeconfig)
    assert annotated["metadata"]["annotations"][remediate.CHANGE_CAUSE] == env_change.change_cause
    assert "INC-7" in env_change.change_cause and "alice" in env_change.change_cause \
        and "kubernetes-admin" in env_change.change_cause

    undo = remediate.rollout_undo(cluster, NS, APP, incident="INC-7")
    assert undo.ok and undo.dry_run_ok
    undo_cmd, undo_annotate = _split(undo.kubectl)
    emu.clear_requests()
    run_printed(undo_cmd + " --dry-run=server", tmp_path, kubeconfig)  # kubectl prints the object it read: read
    sent = [w for w in emu.writes() if w["query"].get("dryRun") == "All"]  # what it sent instead
    assert len(sent) == 1 and sent[0]["path"].endswith(f"/deployments/{APP}")
    body = json.loads(sent[0]["body"])
    template = next(op["value"] for op in body if op["path"] == "/spec/template") if isinstance(body, list) \
        else body["spec"]["template"]
    images = {c["name"]: c["image"] for c in template["spec"]["containers"]}
    assert any(d["field"].endswith(".image") for d in undo.diff)
    for d in undo.diff:
        if d["field"].endswith(".image"):
            assert images[d["field"].split("[", 1)[1].split("]", 1)[0]] == d["after"]
    assert _dry(undo_annotate, tmp_path, kubeconfig)["metadata"]["annotations"][remediate.CHANGE_CAUSE] == \
        undo.change_cause

    key = "sk-rotated-" + "Q" * 24
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", key)
    rot = remediate.rotate_secret(cluster, incident="INC-7", operator="alice")
    assert rot.ok and rot.dry_run_ok
    assert key not in rot.kubectl and key not in json.dumps(rot.to_dict()) and "apply" not in rot.kubectl
    patched = _dry(rot.kubectl, tmp_path, kubeconfig, env={"NEW_MISTRAL_API_KEY": key})
    value = base64.b64decode(patched["data"]["api-key"]).decode()
    assert f"{fingerprint(value)}, {len(value)} chars" == rot.diff[0]["after"] and value == key
    annotations = patched["metadata"]["annotations"]
    assert annotations == {remediate.CHANGE_CAUSE: rot.change_cause}  # no last-applied-configuration copy
    assert key not in json.dumps(patched["metadata"])
    # no process the recipe starts gets the key (or its base64) in its argv: every program it execs
    # (base64, tr, kubectl; test and printf are shell builtins) logs its arguments through a wrapper
    wrap, argv_log = tmp_path / "wrap", tmp_path / "argv.log"
    wrap.mkdir()
    for prog in ("base64", "tr", "kubectl"):
        real = shutil.which(prog)
        assert real is not None
        (wrap / prog).write_text(f'#!/bin/sh\nprintf "%s\\n" "{prog} $*" >> {argv_log}\nexec {real} "$@"\n')
        (wrap / prog).chmod(0o755)
    patched_again = _dry(rot.kubectl, tmp_path, kubeconfig,
                         env={"NEW_MISTRAL_API_KEY": key, "PATH": f"{wrap}:{os.environ['PATH']}"})
    assert patched_again["data"] == patched["data"]
    logged = argv_log.read_text()
    assert {ln.split()[0] for ln in logged.splitlines()} == {"base64", "tr", "kubectl"}
    assert key not in logged and base64.b64encode(key.encode()).decode() not in logged
    unset = run_printed(rot.kubectl + " --dry-run=server -o json", tmp_path, kubeconfig, check=False)
    assert unset.returncode != 0 and not unset.stdout  # $NEW_MISTRAL_API_KEY unset: nothing is sent

    assert _snapshot(emu) == snap  # dryRun=All stored nothing
    writes = emu.writes()  # since kubectl's rollout undo (it has no --field-manager): its, the rotation's
    assert len(writes) >= 4 and all(w["query"].get("dryRun") == "All" for w in writes)
    assert [w["query"].get("fieldManager") for w in writes[1:]] == [remediate.FIELD_MANAGER] * (len(writes) - 1)
    assert all(key not in w["path"] + json.dumps(w["query"]) for w in writes)
    print(f"\n{len(CHECKED) - before_n} write commands checked with --dry-run=server")


def test_restart_and_undo_commands_do_what_the_runbook_said(kubectl_bin: str, emu: KubeEmulator,
                                                            cluster: kube.Cluster, kubeconfig: str,
                                                            tmp_path: Path) -> None:
    before_n = len(CHECKED)
    restart = remediate.rollout_restart(cluster, NS, APP, incident="INC-8", operator="bob")
    assert restart.ok and [d["field"] for d in restart.diff] == \
        [f"spec.template.metadata.annotations[{remediate.RESTARTED_AT}]"]
    rev = emu.get(DEP, APP)["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    run_printed(restart.kubectl, tmp_path, kubeconfig)  # no --dry-run for rollout restart in kubectl
    now = emu.get(DEP, APP)
    assert remediate.RESTARTED_AT in now["spec"]["template"]["metadata"]["annotations"]
    assert now["metadata"]["annotations"][remediate.CHANGE_CAUSE] == restart.change_cause
    assert int(now["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) == int(rev) + 1
    assert any(w["query"].get("fieldManager") == remediate.FIELD_MANAGER and "dryRun" not in w["query"]
               for w in emu.writes())
    # the undo printed for the restart: portable (--context, -n), no local kubeconfig path
    assert "--kubeconfig" not in restart.undo and "--context embedded" in restart.undo and " -n default" in restart.undo
    run_printed(restart.undo, tmp_path, kubeconfig)
    assert remediate.RESTARTED_AT not in (emu.get(DEP, APP)["spec"]["template"]["metadata"].get("annotations") or {})

    original = emu.container_env()
    ch = remediate.plan_env(cluster, NS, APP, {"MAX_CONCURRENT_REQUESTS": "4", "MISTRAL_FALLBACK": "true"},
                            apply_changes=True, operator="bob", incident="INC-8")
    assert ch.ok and ch.applied and ch.verified and ch.identity == "kubernetes-admin"
    managers = run_printed(f"kubectl --kubeconfig {kubeconfig} get deployment {APP} -n {NS} "
                           "-o jsonpath='{.metadata.managedFields[*].manager}'", tmp_path, kubeconfig).stdout.split()
    assert remediate.FIELD_MANAGER in managers  # the API server's record of who wrote it
    assert "--kubeconfig" not in ch.undo and "--context embedded" in ch.undo
    run_printed(ch.undo, tmp_path, kubeconfig)
    assert emu.container_env() == original
    hist = run_printed(cluster.revision_history().kubectl, tmp_path, kubeconfig).stdout
    assert "incident INC-8: set env" in hist and "by bob (as kubernetes-admin)" in hist
    print(f"\n{len(CHECKED) - before_n} commands run for real on the emulator")


def test_identity_is_what_kubectl_auth_whoami_says(kubectl_bin: str, emu: KubeEmulator, tmp_path: Path) -> None:
    for user in ("ok", "viewer"):
        kc = str(emu.write_kubeconfig(tmp_path / f"kc-{user}", user=user))
        with kube.connect(kc, timeout_s=5) as c:
            ch = remediate.rollout_restart(c, NS, APP, operator="carol")
        # what `kubectl auth whoami` (1.27+) sends, in a form every kubectl has
        review = '{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}'
        who = run_printed(f"echo '{review}' | kubectl --kubeconfig {kc} create -f - "
                          "-o jsonpath='{.status.userInfo.username}'", tmp_path, kc).stdout.strip()
        assert ch.identity == who == simkube_user(user) and ch.identity_source == "SelfSubjectReview"
        assert ch.who == "carol"
        if user == "viewer":  # the identity is known even when the write is refused
            assert ch.finding is not None and ch.finding.status == kube.FORBIDDEN


def test_identity_without_self_subject_review_says_why(tmp_path: Path) -> None:
    with KubeEmulator(self_subject_review=False) as old_server:  # before Kubernetes 1.28
        with kube.connect(str(old_server.write_kubeconfig(tmp_path / "kc")), timeout_s=5) as c:
            ch = remediate.plan_env(c, NS, APP, {"MAX_CONCURRENT_REQUESTS": "5"}, operator="frank", incident="INC-9")
    assert ch.ok and ch.who == "frank" and ch.identity == "" and "1.28" in ch.identity_source
    assert ch.change_cause == "incident INC-9: set env MAX_CONCURRENT_REQUESTS=5 on container app by frank via " \
                              "mistral-runbooks"


def simkube_user(kind: str) -> str:
    from runbook_lib.sim.kube import USERS

    return USERS[kind]


# -- secrets written by a controller ----------------------------------------------------------------------
def _own_secret(emu: KubeEmulator, metadata: dict[str, Any]) -> None:
    c = emu.cluster
    info = c.info("", "v1", "secrets")
    with c.lock:
        cur = c.get(info, NS, "mistral-secrets")
        cur["metadata"].update(metadata)
        c.replace(info, NS, "mistral-secrets", cur, False)


def test_rotation_refused_for_an_external_secret(emu: KubeEmulator, cluster: kube.Cluster,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    c = emu.cluster
    es = c.create(c.info("external-secrets.io", "v1beta1", "externalsecrets"), NS, {
        "metadata": {"name": "mistral-secrets"},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault-prod"},
                 "target": {"name": "mistral-secrets"},
                 "data": [{"secretKey": "api-key", "remoteRef": {"key": "prod/mistral", "property": "api_key"}}]}},
        False)
    _own_secret(emu, {"ownerReferences": [{"apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret",
                                           "name": "mistral-secrets", "uid": es["metadata"]["uid"],
                                           "controller": True, "blockOwnerDeletion": True}],
                      "labels": {"reconcile.external-secrets.io/created-by": "abc"}})
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sk-new-" + "z" * 20)
    snap = _snapshot(emu)
    emu.clear_requests()
    ch = remediate.rotate_secret(cluster, apply_changes=True, operator="dana")
    assert not ch.ok and not ch.applied and ch.finding.status == remediate.MANAGED_ELSEWHERE
    msg = ch.finding.message
    assert "External Secrets Operator" in msg and 'ClusterSecretStore "vault-prod"' in msg
    assert 'remote key "prod/mistral", property api_key' in msg and "force-sync" in msg
    assert emu.writes() == [] and _snapshot(emu) == snap

    # labels alone (an ExternalSecret whose ownerReference was dropped, creationPolicy Merge) are enough
    _own_secret(emu, {"ownerReferences": [], "labels": {"reconcile.external-secrets.io/managed": "true"}})
    ch = remediate.rotate_secret(cluster, operator="dana")
    assert ch.finding is not None and ch.finding.status == remediate.MANAGED_ELSEWHERE


def test_rotation_refused_for_a_csi_synced_secret(emu: KubeEmulator, cluster: kube.Cluster,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _own_secret(emu, {"labels": {"secrets-store.csi.k8s.io/managed": "true"},
                      "ownerReferences": [{"apiVersion": "secrets-store.csi.x-k8s.io/v1",
                                           "kind": "SecretProviderClassPodStatus",
                                           "name": "mistral-service-abc-default-mistral-spc", "uid": "u-1"}]})
    monkeypatch.setenv("NEW_MISTRAL_API_KEY", "sk-new-" + "y" * 20)
    emu.clear_requests()
    ch = remediate.rotate_secret(cluster, apply_changes=True)
    assert ch.finding is not None and ch.finding.status == remediate.MANAGED_ELSEWHERE
    assert "Secrets Store CSI driver" in ch.finding.message and "SecretProviderClass" in ch.finding.message
    assert emu.writes() == []


# -- which configuration ---------------------------------------------------------------------------------
def test_kubeconfig_precedence_like_kubectl(emu: KubeEmulator, kubeconfig: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")  # as inside a pod
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    with kube.connect("", timeout_s=3) as c:  # $KUBECONFIG wins over in-cluster
        assert c.config_source == "$KUBECONFIG" and not c.in_cluster and c.server == emu.url and c.pods().ok
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with kube.connect(kubeconfig, timeout_s=3) as c:  # the parameter wins over $KUBECONFIG
        assert c.config_source == "parameter" and c.pods().ok
    monkeypatch.delenv("KUBECONFIG")
    (home / ".kube").mkdir()
    shutil.copy(kubeconfig, home / ".kube" / "config")
    with kube.connect("", timeout_s=3) as c:  # ~/.kube/config wins over in-cluster
        assert c.config_source == "~/.kube/config" and not c.in_cluster and c.pods().ok
    (home / ".kube" / "config").unlink()
    with kube.connect("", timeout_s=3) as c:  # nothing else: in-cluster, here without a token
        assert c.config_source == "in-cluster" and c.in_cluster
        res = c.pods()
        assert res.finding is not None and "In-cluster configuration failed" in res.finding.message
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with kube.connect("", timeout_s=3) as c:  # outside a pod: ~/.kube/config, whose absence is the finding
        assert c.pods().finding is not None and not c.in_cluster
