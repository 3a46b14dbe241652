"""The output root travels with the run; `--incident-id` and `respond` refuse like `run` does.

Two checkouts share one editable install (the package lives in this repository), so "another
checkout" is another working directory, with its own `outputs/`, than the package's. A run started
in one must find "the newest incident" under its own output root only, never beside the package
or in the other checkout, and with none there fail saying so, with its failed record at home.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from matrix_support import ROOT, changed, cli, cli_env, read_json, snapshot
from runbook_lib.errors import ParameterError
from runbook_lib.paths import OUTPUTS_ENV, outputs_dir
from runbook_lib.records.incident_data import newest_incident


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ")


def _checkout(path: Path) -> Path:
    """A second working copy: the runbooks and an outputs/ of its own (the code is the shared install)."""
    shutil.copytree(ROOT / "notebooks", path / "notebooks")
    (path / "outputs").mkdir(parents=True)
    return path


def _incident(root: Path, incident_id: str, started: datetime) -> Path:
    """An incident folder as `respond` leaves one (its index), started at `started`, over after 2 min."""
    folder = root / f"{_stamp(started)}-{incident_id}"
    folder.mkdir(parents=True)
    index = {"id": incident_id, "folder": ".", "started_at": started.isoformat().replace("+00:00", "Z"),
             "finished_at": (started + timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
             "status": "diagnosed", "severity": "P2", "error_class": "rate_limit", "notebooks": [],
             "changes_applied": []}
    (folder / "incident.json").write_text(json.dumps(index), "utf-8")
    return folder


def _records(root: Path, notebook: str) -> list[Path]:
    return sorted(root.glob(f"*/{notebook}.run.json"))


# ---- where the kernel looks, without a kernel ---------------------------------------------------------
def test_outputs_dir_is_never_the_package_s_for_a_run_started_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv(OUTPUTS_ENV, raising=False)
    elsewhere = tmp_path / "other-checkout" / "notebooks"  # like a notebook opened in another checkout
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert outputs_dir() == elsewhere / "outputs"  # its own (absent) outputs/, not the package's
    with pytest.raises(ParameterError) as refused:
        newest_incident("incident_folder")
    assert refused.value.name == "incident_folder" and str(elsewhere / "outputs") in str(refused.value)
    monkeypatch.chdir(ROOT / "notebooks")  # inside the repository (JupyterLab): the repository's outputs/
    assert outputs_dir() == ROOT / "outputs"
    monkeypatch.setenv(OUTPUTS_ENV, str(tmp_path / "given"))  # what run_notebook hands its kernel wins
    assert outputs_dir() == tmp_path / "given"
    newest = _incident(tmp_path / "given", "INC-NEW", datetime.now(UTC))
    _incident(tmp_path / "given", "INC-OLD", datetime.now(UTC) - timedelta(hours=1))
    assert newest_incident("source") == newest


# ---- two checkouts: runs in one never touch the other's outputs ---------------------------------------
@pytest.mark.notebook
def test_two_checkouts_evidence_finds_the_newest_incident_under_its_own_root_only(cluster_stack, api_key,
                                                                                   tmp_path):
    a, b = _checkout(tmp_path / "checkout-a"), _checkout(tmp_path / "checkout-b")
    now = datetime.now(UTC)
    older_b = _incident(b / "outputs", "INC-B", now - timedelta(minutes=10))
    newer_a_record = a / "outputs" / f"{_stamp(now)}-INC-RUN-ONLY"  # a single run's folder, not an incident
    newer_a_record.mkdir()
    (newer_a_record / "triage.run.json").write_text("{}", "utf-8")
    env = cli_env(api_key)
    env.pop(OUTPUTS_ENV, None)
    args = ["run", "evidence", "-q", "-p", "prometheus_url", "", "-r", "kubeconfig",
            cluster_stack.kubeconfig["ok"], "-p", "timeout_s", "2", "-p", "margin", "2m"]
    repo_outputs, before_a = snapshot(ROOT / "outputs"), snapshot(a)

    # In checkout B, no incident_folder: B's incident, although A holds the newest folder of all.
    in_b = cli([*args, "--incident-id", "EV-B"], cwd=b, env=env, timeout=180)
    assert in_b.returncode == 0, in_b.stdout + in_b.stderr[-2000:]
    assert changed(before_a, snapshot(a)) == set(), "a run in checkout B touched checkout A"
    [run_b] = _records(b / "outputs", "evidence")
    result = read_json(run_b)
    bundle = Path(result["verdict"]["bundle"])
    assert bundle.parent == older_b.resolve() and (bundle / "manifest.json").is_file()
    assert read_json(older_b / "incident.json")["evidence"]["bundle"] == bundle.name
    assert result["parameters"].get("incident_folder", "") == ""  # chosen by the fallback, not given

    # In checkout A, whose root holds no incident: refused by name, the root searched named, recorded in A.
    before_b = snapshot(b)
    in_a = cli([*args, "--incident-id", "EV-A"], cwd=a, env=env, timeout=180)
    assert in_a.returncode == 1, in_a.stdout + in_a.stderr[-2000:]
    said = in_a.stdout + in_a.stderr
    assert "'incident_folder'" in said and str(a / "outputs") in said, said[-1500:]
    [run_a] = _records(a / "outputs", "evidence")
    failed = read_json(run_a)
    assert failed["status"] == "failed" and "'incident_folder'" in failed["error"], failed
    assert run_a.parent.name.endswith("-EV-A") and not list(run_a.parent.glob("evidence-*"))

    # --output-dir beats both the working directory and an inherited $RUNBOOK_OUTPUTS, in the kernel too.
    empty_root = tmp_path / "empty-root"
    flag = cli([*args, "--incident-id", "EV-FLAG", "--output-dir", str(empty_root)], cwd=b,
               env={**env, OUTPUTS_ENV: str(b / "outputs")}, timeout=180)
    assert flag.returncode == 1 and str(empty_root) in flag.stdout + flag.stderr, flag.stdout + flag.stderr[-1500:]
    [run_flag] = _records(empty_root, "evidence")
    assert read_json(run_flag)["status"] == "failed"

    assert changed(before_b, snapshot(b)) == set(), "runs given another root touched checkout B"
    assert changed(repo_outputs, snapshot(ROOT / "outputs")) == set(), "a run wrote beside the installed package"


# ---- --incident-id and respond refuse like run and -p do ----------------------------------------------
@pytest.mark.notebook
def test_empty_incident_id_is_refused_the_same_by_flag_and_by_parameter(api_key, tmp_path):
    env = cli_env(api_key)
    ways = {"flag": ["--incident-id", ""], "param": ["-p", "incident_id", ""]}
    for way in ways:
        (tmp_path / way).mkdir()
    with cf.ThreadPoolExecutor(2) as pool:
        outs = dict(zip(ways, pool.map(lambda w: cli(["run", "triage", "-q", *ways[w]], cwd=tmp_path / w, env=env,
                                                     timeout=180), ways)))
    for way, out in outs.items():
        assert out.returncode == 1, (way, out.stdout, out.stderr[-1500:])
        assert "'incident_id'" in out.stdout and "1-64 characters" in out.stdout, (way, out.stdout)
        [run] = _records(tmp_path / way / "outputs", "triage")
        assert run.parent.name.endswith("-invalid-incident-id"), (way, run)  # never a made-up default id
        record = read_json(run)
        assert record["status"] == "failed" and "'incident_id'" in record["error"], (way, record)


@pytest.mark.parametrize("args,name", [
    (["--incident-id", ""], "incident_id"),
    (["-p", "incident_id", ""], "incident_id"),
    (["-r", "no_such_param", "marker-value-7f3a"], "no_such_param"),
], ids=["flag-empty-id", "param-empty-id", "unknown-parameter"])
def test_respond_refuses_before_any_kernel_and_leaves_a_failed_record(api_key, tmp_path, args, name):
    out = cli(["respond", "-q", *args], cwd=tmp_path, env=cli_env(api_key), timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"'{name}'" in out.stdout and "refused before the run started" in out.stderr, out.stdout + out.stderr
    [folder] = list((tmp_path / "outputs").iterdir())
    assert f"record: outputs/{folder.name}/incident.json" in out.stdout
    if name == "incident_id":
        assert folder.name.endswith("-invalid-incident-id")
    index = read_json(folder / "incident.json")
    assert index["status"] == "failed" and f"'{name}'" in index["error"], index
    assert [n["name"] for n in index["notebooks"]] == ["triage"] and index["notebooks"][0]["status"] == "failed"
    run = read_json(folder / "triage.run.json")
    assert run["status"] == "failed" and run["error"].startswith("rejected before the run started")
    assert not list(folder.glob("*.ipynb")), "a notebook ran although the request was refused"
    assert "marker-value-7f3a" not in "".join(p.read_text("utf-8") for p in folder.iterdir() if p.is_file())
    listed = cli(["list", "--json", "--output-dir", str(tmp_path / "outputs")], cwd=tmp_path,
                 env=cli_env(api_key), timeout=60)
    [row] = json.loads(listed.stdout)["incidents"]
    assert row["status"] == "failed"
