"""deploy/kubernetes and deploy/Dockerfile: the safety settings, and the Job's own command really working.

No cluster and no kubectl here, so the pod is reproduced the way the kubelet would start it: the
container's env built from the manifest (values, the downward API, secretKeyRef), `$(VAR)` in
command/args substituted with the kubelet's own rules, then that argv run as a subprocess against
the embedded stack and the Kubernetes emulator (standing in for the in-cluster API). Only the
bucket is swapped for a local folder; that s3:// and gs:// go through papermill's own handlers is
checked on papermill's I/O registry (boto3 and gcsfs are installed in the image, not here).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

from runbook_lib import KERNEL_NAME
from runbook_lib.run.execute import declared_parameters
from runbook_lib.record import read_records
from runbook_lib.secrets import fingerprint

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
MANIFESTS = sorted(K8S.glob("*.yaml"))
READ_VERBS = {"get", "list", "watch"}
SECRETISH = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)
PARAM_FLAGS = {"-p": "p", "--parameters": "p", "-r": "r", "--parameters_raw": "r"}
OPAQUE_PARAM_FLAGS = {"-y", "--parameters_yaml", "-f", "--parameters_file", "-b", "--parameters_base64"}
VENV_BIN = str(Path(sys.executable).parent)


# ------------------------------------------------------------------------------------ helpers


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]


def all_docs() -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in docs(p)]


def workloads() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(object, its Job spec, its pod spec) for every Job and CronJob."""
    out = []
    for d in all_docs():
        if d["kind"] == "Job":
            out.append((d, d["spec"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            job = d["spec"]["jobTemplate"]["spec"]
            out.append((d, job, job["template"]["spec"]))
    return out


def only(kind: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    found = [w for w in workloads() if w[0]["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion (k8s third_party/forked/golang/expansion): `$(NAME)` -> value if
    NAME is defined, else left as written; `$$` -> `$`; any other `$` is kept."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close == -1:
                    out.append("$(")
                    i += 2
                    continue
                name = text[i + 2:close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_env(c: dict[str, Any], *, overrides: dict[str, str], fields: dict[str, str],
                  secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The env the kubelet gives the container, in order; `overrides` replace literal `value`s."""
    unknown = set(overrides) - {e["name"] for e in c["env"] if "value" in e}
    assert not unknown, f"the manifest sets no literal env {sorted(unknown)}"
    env: dict[str, str] = {}
    for e in c["env"]:
        name = e["name"]
        if "value" in e:
            env[name] = overrides.get(name, kubelet_expand(str(e["value"]), env))
        elif "fieldRef" in e["valueFrom"]:
            env[name] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[name] = secrets[ref["name"], ref["key"]]
            else:
                assert ref.get("optional"), f"{name}: Secret {ref['name']}/{ref['key']} is required"
        else:
            raise AssertionError(f"{name}: unexpected valueFrom {e['valueFrom']}")
    return env


def secret_env_names(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}


def cron_papermill_argv(c: dict[str, Any]) -> list[str]:
    """The CronJob's `exec papermill ...` line as the shell splits it (variables still unexpanded)."""
    assert c["command"][:2] == ["/bin/sh", "-c"] and len(c["args"]) == 1
    script = c["args"][0].replace("\\\n", " ")
    lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("exec papermill ")]
    assert len(lines) == 1, script
    return shlex.split(lines[0])[1:]


def job_argv(c: dict[str, Any]) -> list[str]:
    return [*c.get("command", []), *c.get("args", [])]


def papermill_params(argv: list[str]) -> list[tuple[str, str, str]]:
    """(kind p|r, name, value) for every parameter on a papermill command line."""
    out, i = [], 0
    while i < len(argv):
        assert argv[i] not in OPAQUE_PARAM_FLAGS, f"{argv[i]}: parameters that cannot be audited here"
        if argv[i] in PARAM_FLAGS:
            out.append((PARAM_FLAGS[argv[i]], argv[i + 1], argv[i + 2]))
            i += 3
        else:
            i += 1
    return out


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def referenced_vars(value: str) -> set[str]:
    """Env vars a value refers to, as $(VAR) (kubelet), $VAR or ${VAR} (shell)."""
    return set(re.findall(r"\$[({]?([A-Za-z_][A-Za-z0-9_]*)", value))


def dockerfile_env(name: str) -> str:
    m = re.search(rf"^ENV\s+{name}=(\S+)", DOCKERFILE.read_text("utf-8"), re.M)
    assert m, f"Dockerfile sets no ENV {name}"
    return m.group(1)


def pod_run_env(c: dict[str, Any], tmp_path: Path, overrides: dict[str, str], api_key: str,
                kubeconfig: str) -> dict[str, str]:
    """The container env plus what the image and the node supply: PATH, HOME (an emptyDir), and
    the cluster credentials (KUBECONFIG to the emulator stands in for the in-cluster token)."""
    home = tmp_path / "home"
    home.mkdir()
    env = container_env(c, overrides=overrides, fields={"metadata.name": "mistral-triage-x7k2p-q9z4d"},
                        secrets={("mistral-api-key", "MISTRAL_API_KEY"): api_key})
    return {**env, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home), "KUBECONFIG": kubeconfig, "LANG": "C.UTF-8"}


def requests_within_role(kube: Any, role: dict[str, Any]) -> list[str]:
    """Every resource request the emulator saw, described; fails on any the Role would refuse."""
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    seen = []
    for req in kube.requests:
        parts = req["path"].strip("/").split("/")
        if parts[0] == "api":
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) > 3:
            group, rest = parts[1], parts[3:]
        else:
            continue  # discovery (/api, /apis/..., /version): granted to every authenticated user
        assert rest[:1] == ["namespaces"] and len(rest) >= 3, f"cluster-wide request {req['path']}"
        ns, resource, tail = rest[1], rest[2], rest[3:]
        assert ns == role["metadata"]["namespace"], f"{req['path']} outside the Role's namespace"
        if len(tail) == 2:
            resource, verb = f"{resource}/{tail[1]}", "get"
        elif tail:
            verb = "get"
        else:
            verb = "watch" if req["query"].get("watch") in ("1", "true") else "list"
        assert req["method"] == "GET", req
        assert (group, resource, verb) in granted, f"{req['method']} {req['path']} needs {verb} {resource}"
        seen.append(f"{verb} {resource}")
    return seen


# ------------------------------------------------------------------------------------ static


def test_every_manifest_parses_and_names_its_kinds():
    assert {p.name for p in MANIFESTS} >= {"job.yaml", "cronjob.yaml", "rbac.yaml", "serve.yaml"}
    kinds = [d["kind"] for d in all_docs()]
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "Job", "CronJob",
                                    # serve.yaml (tests/test_deploy_serve.py)
                                    "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                                    "NetworkPolicy", "PodDisruptionBudget",
                                    # rbac-responder.yaml (tests/test_deploy_responder.py)
                                    "Role", "RoleBinding", "RoleBinding",
                                    # rbac-serve-dispatch.yaml (tests/test_serve_dispatch_rbac.py)
                                    "ServiceAccount", "Role", "RoleBinding", "RoleBinding"])
    assert "Secret" not in kinds, "Secrets are created from the environment, never committed"
    for d in all_docs():
        assert d["apiVersion"] and (d["metadata"].get("name") or d["metadata"].get("generateName")), d


def test_kubelet_expansion_rules():
    env = {"A": "x", "B": "$(A)"}
    assert kubelet_expand("$(A)/$(B)", env) == "x/$(A)"   # no recursive expansion
    assert kubelet_expand("$$(A) $(UNSET) $$$(A) $x ${A} $(", env) == "$(A) $(UNSET) $x $x ${A} $("


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_workload_safety_settings(kind):
    obj, job, pod = only(kind)
    c = container(pod)
    assert job["backoffLimit"] == 0
    assert isinstance(job["activeDeadlineSeconds"], int) and 0 < job["activeDeadlineSeconds"] <= 3600
    assert isinstance(job["ttlSecondsAfterFinished"], int) and job["ttlSecondsAfterFinished"] > 0
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][bound]), bound
    # A read-only root needs writable /tmp and HOME (Jupyter runtime files, IPython, matplotlib).
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty_dirs}
    assert {"/tmp", dockerfile_env("HOME")} <= mounts
    argv = cron_papermill_argv(c) if kind == "CronJob" else job_argv(c)[1:]
    assert option(argv, "-k") == KERNEL_NAME
    assert option(argv, "--cwd") in mounts, "the kernel's working directory must be writable"
    cell_timeout = int(option(argv, "--execution-timeout"))
    assert 0 < cell_timeout < job["activeDeadlineSeconds"]
    if kind == "CronJob":
        assert obj["spec"]["schedule"] == "*/15 * * * *"
        assert obj["spec"]["concurrencyPolicy"] == "Forbid"
        assert 0 < obj["spec"]["startingDeadlineSeconds"] < 15 * 60
        assert obj["spec"]["successfulJobsHistoryLimit"] >= 1 and obj["spec"]["failedJobsHistoryLimit"] >= 1
        assert job["activeDeadlineSeconds"] < 15 * 60, "a run must end before the next is due"


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_key_only_from_a_secret_and_never_a_parameter(kind):
    _, _, pod = only(kind)
    c = container(pod)
    argv = cron_papermill_argv(c) if kind == "CronJob" else job_argv(c)
    params = papermill_params(argv)
    assert params, "no parameters found: the command was not parsed"
    secret_env = secret_env_names(c)
    key_ref = next(e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "MISTRAL_API_KEY")
    assert key_ref == {"name": "mistral-api-key", "key": "MISTRAL_API_KEY"}, "required, from the Secret"
    for e in c["env"]:
        if SECRETISH.search(e["name"]):
            assert "secretKeyRef" in e.get("valueFrom", {}), f"{e['name']} must come from a Secret"
    names = [name for _, name, _ in params]
    assert len(names) == len(set(names))
    assert set(names) <= declared_parameters("triage"), "a parameter the notebook does not declare is ignored"
    assert "apply_changes" not in declared_parameters("triage") and "apply_changes" not in names
    for _, name, value in params:
        assert not referenced_vars(value) & secret_env, f"{name} carries a Secret's value"
        if name == "api_key_env":
            assert value in secret_env, "api_key_env names the env var filled from the Secret"
        else:
            assert not SECRETISH.search(name), name
    assert ("r", "api_key_env", "MISTRAL_API_KEY") in params


def test_rbac_is_read_only_and_bound_to_the_workloads_service_account():
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs(K8S / "rbac.yaml"):  # the workloads' identity (rbac-responder.yaml: tests/test_deploy_responder.py)
        by_kind.setdefault(d["kind"], []).append(d)
    (role,), (binding,), (sa,) = by_kind["Role"], by_kind["RoleBinding"], by_kind["ServiceAccount"]
    assert "ClusterRole" not in by_kind and "ClusterRoleBinding" not in by_kind
    resources = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ_VERBS, rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        resources |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {("", "pods"), ("", "pods/log"), ("", "events"), ("apps", "deployments"),
                         ("apps", "replicasets")}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    for obj, _, pod in workloads():
        assert pod["serviceAccountName"] == sa["metadata"]["name"]
        assert obj["metadata"]["namespace"] == sa["metadata"]["namespace"]
        target = next(e["value"] for e in container(pod)["env"] if e["name"] == "TARGET_NAMESPACE")
        assert target == role["metadata"]["namespace"], "triage reads the namespace the Role grants"


def test_image_constraints_pin_what_pyproject_asks_and_leave_the_extras_out():
    """deploy/constraints.txt (scripts/lock-image.sh) against pyproject.toml: every core dependency
    pinned inside its range, the object-store clients beside kubernetes<37, no lab/sim/plots."""
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, core):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {dep.specifier}"
    assert int(pins["kubernetes"].split(".")[0]) < 37 and int(pins["python-dateutil"].split(".")[0]) < 3
    assert {"boto3", "gcsfs", "papermill", "s3fs"} <= set(pins)  # s3fs: the [s3] extra (records/remote.py)
    assert not {"jupyterlab", "kmock", "matplotlib"} & set(pins), "an extra made it into the image"


def test_dockerfile_builds_the_image_the_manifests_expect():
    text = DOCKERFILE.read_text("utf-8")
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", text, re.M), "the base image pinned to a release"
    install = re.search(r"^RUN pip install (.+?)\\$", text, re.M)
    assert install and install.group(1).startswith("-c deploy/constraints.txt "), "every package pinned"
    assert re.search(r"^COPY deploy/constraints.txt deploy/constraints.txt$", text, re.M)
    assert install and "'papermill[s3,gcs]'" in install.group(1) and " '.[s3]' " in f" {install.group(1)} "
    assert "'kubernetes<37'" in install.group(1), "kubernetes 37 needs python-dateutil>=3, botocore <3"
    assert f"python -m ipykernel install --sys-prefix --name {KERNEL_NAME}" in text
    assert re.search(r"^COPY notebooks/ notebooks/", text, re.M) and re.search(r"^WORKDIR /app$", text, re.M)
    user = re.search(r"^USER (\d+)(?::(\d+))?$", text, re.M)
    assert user and int(user.group(1)) != 0, "a numeric, non-root USER (kubelet checks runAsNonRoot)"
    for _, _, pod in workloads():
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))


def test_papermill_routes_the_record_urls_to_its_object_store_handlers():
    from papermill import iorw

    _, _, pod = only("Job")
    c = container(pod)
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    out = kubelet_expand(c["args"][1], env)
    assert out == f"s3://BUCKET/incidents/{env['INCIDENT_ID']}/triage.ipynb"

    def handler(path: str) -> type:
        h = iorw.papermill_io.get_handler(path)
        return h if isinstance(h, type) else type(h)

    assert handler(out) is iorw.S3Handler
    assert handler(out.replace("s3://", "gs://")) is iorw.GCSHandler
    assert handler("/tmp/bucket/triage.ipynb") is iorw.LocalHandler
    cron_env = {e["name"]: e["value"] for e in container(only("CronJob")[2])["env"] if "value" in e}
    assert cron_env["RECORDS_URL"] == env["RECORDS_URL"] == "s3://BUCKET"


# ------------------------------------------------------------------------------------ executed


def _stack_overrides(st: Any, tmp_path: Path, dead_port: int) -> dict[str, str]:
    return {"RECORDS_URL": str(tmp_path / "bucket"), "MISTRAL_URL": st.mistral_url,
            "SERVICE_HEALTH_URL": st.service_health_url,
            "PROMETHEUS_URL": f"http://127.0.0.1:{dead_port}"}  # down: triage falls back to the logs


def _check_record(path: Path, api_key: str, kind: str) -> dict[str, Any]:
    raw = path.read_text("utf-8")
    assert api_key not in raw, "the API key is in the record"
    assert fingerprint(api_key) in raw, "the key was not read from $MISTRAL_API_KEY"
    nb = nbformat.reads(raw, as_version=4)
    params = nb.metadata["papermill"]["parameters"]
    assert api_key not in map(str, params.values()) and params["api_key_env"] == "MISTRAL_API_KEY"
    assert params["operator"].startswith(f"k8s-{kind}/mistral-triage-"), params["operator"]
    # papermill warns "Unable to parse ... label_selector" (its inference trips on the '=' in the
    # default) but still injects every parameter: the record shows what the run used.
    injected = next(cell for cell in nb.cells if "injected-parameters" in cell.metadata.get("tags", []))
    for name in ("incident_id", "namespace", "label_selector", "mistral_url"):
        assert re.search(rf"^{name} = ", injected.source, re.M), (name, injected.source)
    assert params["namespace"] == "default" and params["label_selector"] == "app=mistral-service"
    return {"records": read_records(path), "params": params}


@pytest.mark.notebook
def test_job_command_runs_triage_as_the_kubelet_would_start_it(cluster_stack, api_key, tmp_path, dead_port):
    st = cluster_stack
    obj, job, pod = only("Job")
    c = container(pod)
    role = next(d for d in docs(K8S / "rbac.yaml") if d["kind"] == "Role")
    st.set_mode("rate_limited")
    assert st.wait_for_service_status({"down"}, timeout_s=10)
    # A numeric incident id: -r keeps it a string (with -p papermill would pass the int 1234).
    overrides = {**_stack_overrides(st, tmp_path, dead_port), "INCIDENT_ID": "1234"}
    env = pod_run_env(c, tmp_path, overrides, api_key, st.kubeconfig["ok"])
    assert "AWS_ACCESS_KEY_ID" not in env, "optional Secret absent -> unset, as with IRSA"
    argv = [kubelet_expand(a, env) for a in job_argv(c)]
    assert not [a for a in argv if "$(" in a], argv
    out = Path(argv[2])
    assert out == tmp_path / "bucket" / "incidents" / "1234" / "triage.ipynb"
    out.parent.mkdir(parents=True)  # object stores have no folders; a local path needs one
    st.kube.clear_requests()
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=job["activeDeadlineSeconds"])
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert api_key not in proc.stdout + proc.stderr, "the key reached the pod's log"
    rec = _check_record(out, api_key, "job")
    assert rec["params"]["incident_id"] == "1234"
    verdict = rec["records"]["verdict"]
    assert verdict["line"].startswith("P1 rate limited"), verdict  # our service down on 429s: P1
    assert "[recorded: verdict]" in proc.stderr, "--log-output: `kubectl logs` shows the run reach its verdict"
    assert rec["records"]["error_logs"]["status"] == "ok", rec["records"]["error_logs"]
    assert st.kube.writes() == []
    seen = requests_within_role(st.kube, role)
    assert "list pods" in seen and "get pods/log" in seen, seen
    assert took < job["activeDeadlineSeconds"]


@pytest.mark.notebook
def test_cronjob_shell_command_stamps_the_path_and_runs_triage(cluster_stack, api_key, tmp_path, dead_port):
    st = cluster_stack
    _, job, pod = only("CronJob")
    c = container(pod)
    env = pod_run_env(c, tmp_path, _stack_overrides(st, tmp_path, dead_port), api_key, st.kubeconfig["ok"])
    argv = [kubelet_expand(a, env) for a in job_argv(c)]
    assert "$$" not in argv[2] and "stamp=$(date -u" in argv[2], "the kubelet turns $$( into $("
    start = datetime.now(UTC)
    for day in {start.strftime("%Y-%m-%d"), (start + timedelta(minutes=5)).strftime("%Y-%m-%d")}:
        (tmp_path / "bucket" / "scheduled" / day).mkdir(parents=True, exist_ok=True)
    argv[0] = "/bin/sh"
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=job["activeDeadlineSeconds"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = list((tmp_path / "bucket" / "scheduled").glob("*/triage-*.ipynb"))
    assert len(written) == 1, written
    out = written[0]
    m = re.fullmatch(r"triage-(\d{8}T\d{6}Z)\.ipynb", out.name)
    assert m and out.parent.name == datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d")
    stamp = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert start - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    rec = _check_record(out, api_key, "cronjob")
    assert rec["params"]["incident_id"] == f"scheduled-{m.group(1)}"
    assert rec["params"]["mistral_url"] == st.mistral_url
    assert rec["records"]["verdict"]["severity"] in ("P1", "P2", "P3", "P4")
    assert st.kube.writes() == []
