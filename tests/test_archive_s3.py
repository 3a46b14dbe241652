"""Issue 19: the archive on object storage, against moto's S3 server over real HTTP (s3fs -> botocore -> moto).

The archive commands run as the real CLI in a subprocess, with only AWS_ENDPOINT_URL and dummy
credentials in their environment; the same archive read from a local folder (the code `runbook
list` has always used) is the ground truth. Requests are counted from moto's own access log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.records import bundle, remote
from runbook_lib.records.incident import write_index

BIN = Path(sys.executable).parent
AWS_SECRET = "moto-secret-" + "x7Qz9" * 4  # dummy, but planted: it must never appear in a record or output


class Moto:
    """moto_server on a free port, its access log, the environment a client needs, and a boto3 client."""

    def __init__(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key=AWS_SECRET, region_name="us-east-1")

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, mark: int) -> list[str]:
        """'METHOD /path?query' of every request moto logged after `mark`."""
        text = self.log.read_bytes()[mark:].decode("utf-8", "replace")
        return re.findall(r'"(?:\x1b\[[0-9;]*m)?((?:GET|HEAD|PUT|POST|DELETE) \S+) HTTP/1\.1', text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    port = _free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT)
    server = Moto(port, log)
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: moto answers in ~1 s
            try:
                urllib.request.urlopen(server.url + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bucket(moto: Moto, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (no Object Lock)."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    moto.client().create_bucket(Bucket=name)
    return name


def _cli(moto: Moto, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNBOOK_"))} | moto.env | (env or {})
    return subprocess.run([str(BIN / "runbook"), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120)


def _incident(root: Path, stamp: str, incident_id: str, **fields: Any) -> Path:
    """An incident folder as `runbook respond` leaves it: its index, and notebooks when listed."""
    folder = root / f"{stamp}-{incident_id}"
    folder.mkdir(parents=True)
    index = {"id": incident_id, "folder": ".", "started_at": None, "finished_at": None, "status": "diagnosed",
             "severity": None, "error_class": None, "verdict": None, "notebooks": [], "changes_applied": [],
             **fields}
    for nb in index["notebooks"]:
        (folder / f"{nb['name']}.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}), "utf-8")
        (folder / f"{nb['name']}.html").write_text("<html></html>", "utf-8")
    write_index(folder, index)
    return folder


def _with_evidence(folder: Path) -> None:
    """An evidence bundle (folder and .tar.gz) in the incident, recorded in its index as evidence.py does."""
    with bundle.BundleWriter(folder, "evidence-INC-1", window={"start": "a", "end": "b"}) as b:
        b.add_text("logs/pods.jsonl", '{"line": "429 Too Many Requests"}\n', what="logs", source="kubectl logs")
        b.add_json("k8s/events.json", [{"reason": "BackOff"}], what="events", source="kubectl get events")
    index = json.loads((folder / "incident.json").read_text())
    index["evidence"] = {"bundle": b.folder.name, "archive": b.archive.name, "files": 2}
    write_index(folder, index)


def _archive(root: Path, n: int = 6) -> list[Path]:
    """`n` incidents over three days, classes and severities; the first has evidence and two notebooks."""
    folders = []
    for i in range(n):
        day = 20 + i % 3
        folders.append(_incident(
            root, f"202611{day}T1{i}0000Z", f"INC-{i}", started_at=f"2026-11-{day}T1{i}:00:00Z",
            finished_at=f"2026-11-{day}T1{i}:05:00Z", severity=f"P{1 + i % 4}",
            error_class=("rate_limit", "auth", "network")[i % 3], status=("diagnosed", "triaged")[i % 2],
            notebooks=[{"name": "triage", "status": "succeeded", "path": "triage.ipynb", "html": "triage.html"}]
            + ([{"name": "diagnose_rate_limit", "status": "succeeded", "path": "diagnose_rate_limit.ipynb"}]
               if i == 0 else []),
            postmortem={"duration_s": 300, "time_to_detect_s": 30 + i, "time_to_mitigate_s": 120,
                        "time_to_resolve_s": 300}))
    _with_evidence(folders[0])
    return folders


def _publish(folders: list[Path], url: str, **kw: Any) -> None:
    fs = remote.preflight(url)
    for folder in folders:
        remote.upload(folder, url, fs=fs, **kw)


@pytest.fixture(autouse=True)
def _aws_env(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's s3fs (used to publish fixtures) talks to moto too."""
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)


def _without(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def test_list_over_s3_is_the_local_list_with_one_listing_and_one_index_per_incident(moto, bucket, tmp_path):
    local = tmp_path / "outputs"
    folders = _archive(local)
    url = f"s3://{bucket}/team-a"
    _publish(folders, url)

    truth = _cli(moto, "list", "--json", "--output-dir", str(local), cwd=tmp_path)
    mark = moto.mark()
    got = _cli(moto, "list", "--json", "--output-dir", url, cwd=tmp_path)
    requests = moto.requests_since(mark)
    assert got.returncode == 0, got.stderr
    rows, expected = json.loads(got.stdout)["incidents"], json.loads(truth.stdout)["incidents"]
    assert len(rows) == len(folders) == 6
    assert _without(rows, "folder") == _without(expected, "folder")
    assert [r["folder"] for r in rows] == [f"{url}/{Path(r['folder']).name}" for r in expected]
    # the bound: one listing of the prefix (with the delimiter: bundles and notebooks are never listed)
    # plus one GET of each incident's incident.json, nothing else
    listings = [r for r in requests if r.startswith(f"GET /{bucket}?list-type=2")]
    # the GETs are presigned (records/remote.py): the signature is in the query string
    gets = sorted(r.split("?", 1)[0] for r in requests if r not in listings)
    assert len(listings) == 1 and "delimiter=/" in listings[0] and "prefix=team-a/" in listings[0], requests
    assert gets == sorted(f"GET /{bucket}/team-a/{f.name}/incident.json" for f in folders), requests

    table = _cli(moto, "list", "--status", "triaged", "--output-dir", url, cwd=tmp_path)
    assert table.returncode == 0 and "3 of 6 incident(s) match the filters" in table.stdout, table


def test_show_and_report_over_s3_read_as_the_local_archive(moto, bucket, tmp_path):
    local = tmp_path / "outputs"
    folders = _archive(local, n=4)
    url = f"s3://{bucket}/archive"
    _publish(folders, url)

    shown = _cli(moto, "show", "INC-0", "--json", "--output-dir", url, cwd=tmp_path)
    truth = json.loads(_cli(moto, "show", "INC-0", "--json", "--output-dir", str(local), cwd=tmp_path).stdout)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["folder"] == f"{url}/{folders[0].name}"
    assert [(n["name"], n["status"], n["ipynb_exists"], n["html_exists"]) for n in detail["notebooks"]] == \
        [(n["name"], n["status"], n["ipynb_exists"], n["html_exists"]) for n in truth["notebooks"]]
    assert detail["notebooks"][0]["path"] == f"{url}/{folders[0].name}/triage.ipynb"
    assert {k: v for k, v in detail.items() if k not in ("folder", "notebooks")} == \
        {k: v for k, v in truth.items() if k not in ("folder", "notebooks")}
    text = _cli(moto, "show", folders[1].name, "--output-dir", url, cwd=tmp_path)
    assert text.returncode == 0 and "INC-1" in text.stdout, text

    missing = _cli(moto, "show", "INC-99", "--output-dir", url, cwd=tmp_path)
    assert missing.returncode == 2 and "INC-99" in missing.stderr and "INC-0" in missing.stderr, missing

    rep = _cli(moto, "report", "--json", "--output-dir", url, cwd=tmp_path)
    truth_rep = _cli(moto, "report", "--json", "--output-dir", str(local), "--plot", str(tmp_path / "l.png"),
                     cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout) == json.loads(truth_rep.stdout)
    assert json.loads(rep.stdout)["incidents"] == 4


def test_verify_over_s3_rehashes_the_stored_bundle_and_catches_a_rewritten_object(moto, bucket, tmp_path):
    local = tmp_path / "outputs"
    folder = _archive(local, n=1)[0]
    url = f"s3://{bucket}/arch"
    _publish([folder], url)

    ok = _cli(moto, "verify", "INC-0", "--output-dir", url, cwd=tmp_path)
    assert ok.returncode == 0, ok
    assert ok.stdout.count("OK: 2 files match manifest.json") == 2, ok.stdout
    assert f"{url}/{folder.name}/evidence-INC-1" in ok.stdout
    assert "retention: none" in ok.stdout and "no S3 Object Lock" in ok.stdout

    # someone with write access rewrites one collected file in the bucket
    moto.client().put_object(Bucket=bucket, Key=f"arch/{folder.name}/evidence-INC-1/logs/pods.jsonl",
                             Body=b'{"line": "all fine"}\n')
    bad = _cli(moto, "verify", f"{url}/{folder.name}", cwd=tmp_path)  # the folder's own URL works too
    assert bad.returncode == 1, bad
    assert "logs/pods.jsonl: sha256 differs from the manifest" in bad.stdout


def test_object_lock_retention_written_by_run_and_reported_by_verify(moto, tmp_path):
    client = moto.client()
    client.create_bucket(Bucket="locked-archive", ObjectLockEnabledForBucket=True)
    url = "s3://locked-archive/prod"
    folder = _archive(tmp_path / "outputs", n=1)[0]
    before = datetime.now(UTC)
    _publish([folder], url, retain_days=3)

    key = f"prod/{folder.name}/evidence-INC-1/manifest.json"
    # moto's server answers GetObjectRetention with a 500 (not implemented); HEAD carries the same fields
    head = client.head_object(Bucket="locked-archive", Key=key)
    held = {"Mode": head["ObjectLockMode"], "RetainUntilDate": head["ObjectLockRetainUntilDate"].astimezone(UTC)}
    assert held["Mode"] == "COMPLIANCE"
    assert before + timedelta(days=3) - timedelta(minutes=5) < held["RetainUntilDate"] \
        < datetime.now(UTC) + timedelta(days=3, minutes=5)
    version = head["VersionId"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):  # the lock is real
        client.delete_object(Bucket="locked-archive", Key=key, VersionId=version)

    ver = _cli(moto, "verify", "INC-0", "--output-dir", url, cwd=tmp_path)
    assert ver.returncode == 0, ver
    until = held["RetainUntilDate"].isoformat(timespec="seconds")
    n = len(client.list_objects_v2(Bucket="locked-archive", Prefix=f"prod/{folder.name}/")["Contents"])
    assert f"retention: COMPLIANCE until {until} (in force) on {n} of {n} object(s)" in ver.stdout, ver.stdout

    # the CLI's run path: a record written with --retain-days (a run refused before any kernel: no notebook)
    run = _cli(moto, "run", "triage", "-p", "bogus", "1", "--incident-id", "INC-lock", "--output-dir", url,
               "--retain-days", "2", cwd=tmp_path)
    assert run.returncode == 2 and "archived: s3://locked-archive/prod/" in run.stderr, run
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="locked-archive", Prefix="prod/")["Contents"]
            if "INC-lock" in o["Key"]]
    assert any(k.endswith("/triage.run.json") for k in keys), keys
    assert [client.head_object(Bucket="locked-archive", Key=k)["ObjectLockMode"] for k in keys] == \
        ["COMPLIANCE"] * len(keys)

    # a plain object added later without retention is reported
    client.put_object(Bucket="locked-archive", Key=f"prod/{folder.name}/planted.txt", Body=b"x")
    bad = _cli(moto, "verify", "INC-0", "--output-dir", url, cwd=tmp_path)
    assert bad.returncode == 1 and "planted.txt: no Object Lock retention" in bad.stdout, bad


def test_run_writes_the_redacted_record_to_s3_and_never_a_credential(moto, bucket, tmp_path):
    """A run into s3:// uploads the record the local run writes (refused-run path: no kernel)."""
    planted = "sk-planted-" + "Q" * 24
    env = {"MISTRAL_API_KEY": planted}
    url = f"s3://{bucket}/runs"
    run = _cli(moto, "run", "triage", "-p", "mistral_url", planted, "--incident-id", "INC-9", "--output-dir", url,
               cwd=tmp_path, env=env)
    local = _cli(moto, "run", "triage", "-p", "mistral_url", planted, "--incident-id", "INC-9", "--output-dir",
                 str(tmp_path / "outputs"), cwd=tmp_path, env=env)
    assert run.returncode == local.returncode == 2, run
    assert re.search(rf"archived: {url}/\d{{8}}T\d{{6}}Z-INC-9/", run.stderr), run.stderr
    client = moto.client()
    objects = client.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"]
    stored = {o["Key"].rsplit("/", 1)[-1]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in objects}
    written = {p.name: p.read_bytes() for p in (tmp_path / "outputs").rglob("*") if p.is_file()}
    assert set(stored) == set(written) and "triage.run.json" in stored
    remote_run, local_run = (json.loads(b) for b in (stored["triage.run.json"], written["triage.run.json"]))
    assert remote_run["parameters"] == local_run["parameters"] and remote_run["status"] == "failed"
    for blob in [*stored.values(), run.stdout.encode(), run.stderr.encode()]:
        assert planted.encode() not in blob and AWS_SECRET.encode() not in blob
    assert not list(Path(tempfile_dir()).glob("runbook-stage-*/*INC-9*")), "the staging copy is removed"
    # the record lines name where the record is, not the removed staging folder
    assert re.search(rf"record: {url}/\d{{8}}T\d{{6}}Z-INC-9/triage\.run\.json", run.stdout), run.stdout
    assert "runbook-stage-" not in run.stdout + run.stderr

    # respond (refused: an unknown parameter) leaves an incident folder with incident.json: uploaded too
    resp = _cli(moto, "respond", "-p", "bogus", "1", "--incident-id", "INC-10", "--output-dir", url, cwd=tmp_path)
    assert resp.returncode == 2 and re.search(rf"archived: {url}/\d{{8}}T\d{{6}}Z-INC-10/", resp.stderr), resp
    listed = _cli(moto, "list", "--json", "--output-dir", url, cwd=tmp_path)
    rows = json.loads(listed.stdout)["incidents"]
    assert sorted((r["id"], r["kind"], r["status"]) for r in rows) == \
        [("INC-10", "incident", "failed"), ("INC-9", "run", "failed")], listed


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_clear_errors_missing_bucket_unreachable_endpoint_no_extra_no_lock(moto, bucket, tmp_path, dead_port):
    gone = _cli(moto, "list", "--output-dir", "s3://no-such-bucket/x", cwd=tmp_path)
    assert gone.returncode == 2 and "bucket 'no-such-bucket' does not exist" in gone.stderr, gone
    run = _cli(moto, "run", "triage", "--output-dir", "s3://no-such-bucket/x", cwd=tmp_path)
    assert run.returncode == 2 and "does not exist" in run.stderr and "running triage" not in run.stderr, run

    empty = _cli(moto, "list", "--output-dir", f"s3://{bucket}/nothing-yet", cwd=tmp_path)
    assert empty.returncode == 0 and "no incidents recorded under" in empty.stdout
    assert "does not exist" not in empty.stdout

    down = _cli(moto, "list", "--output-dir", f"s3://{bucket}/x", cwd=tmp_path,
                env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}"})
    assert down.returncode == 2, down
    assert "--output-dir s3://" in down.stderr and "cannot be reached" in down.stderr, down.stderr
    assert AWS_SECRET not in down.stderr and "Traceback" not in down.stderr

    no_lock = _cli(moto, "run", "triage", "--output-dir", f"s3://{bucket}/x", "--retain-days", "7", cwd=tmp_path)
    assert no_lock.returncode == 2 and "--retain-days" in no_lock.stderr and "Object Lock" in no_lock.stderr
    local_lock = _cli(moto, "run", "triage", "--output-dir", str(tmp_path / "o"), "--retain-days", "7",
                      cwd=tmp_path)
    assert local_lock.returncode == 2 and "object-storage --output-dir" in local_lock.stderr, local_lock
    # $RUNBOOK_RETAIN_DAYS is the default for object storage only: a local run ignores it
    env_local = _cli(moto, "run", "triage", "-p", "bogus", "1", "--output-dir", str(tmp_path / "o2"), cwd=tmp_path,
                     env={"RUNBOOK_RETAIN_DAYS": "7"})
    assert env_local.returncode == 2 and "'bogus'" in env_local.stderr and "retain" not in env_local.stderr
    env_s3 = _cli(moto, "run", "triage", "--output-dir", f"s3://{bucket}/x", cwd=tmp_path,
                  env={"RUNBOOK_RETAIN_DAYS": "7"})
    assert env_s3.returncode == 2 and "Object Lock" in env_s3.stderr, env_s3
    bad_days = _cli(moto, "respond", "--output-dir", f"s3://{bucket}/x", "--retain-days", "0", cwd=tmp_path)
    assert bad_days.returncode == 2 and "'--retain-days'" in bad_days.stderr, bad_days

    # an install without the [s3] extra: s3fs cannot be imported
    code = ("import sys; sys.modules['s3fs'] = None; from runbook_lib.cli import main; "
            f"sys.exit(main(['list', '--output-dir', 's3://{bucket}/x']))")
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | moto.env
    extra = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=full,
                           cwd=tmp_path)
    assert extra.returncode == 2, extra
    assert "needs s3fs" in extra.stderr and "pip install 'mistral-runbooks[s3]'" in extra.stderr, extra.stderr


@pytest.mark.notebook
def test_a_real_triage_run_lands_in_s3_redacted_and_reads_back(moto, bucket, tmp_path, stack, api_key):
    """`runbook run triage --output-dir s3://...` against the embedded stack: executed notebook, HTML and
    run.json in the bucket, the API key in none of them, and list/show read the run back."""
    url = f"s3://{bucket}/runs"
    run = _cli(moto, "run", "triage", "-q", "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url",
               stack.service_health_url, "-p", "prometheus_url", "", "-p", "timeout_s", "2",
               "--incident-id", "INC-real", "--output-dir", url, cwd=tmp_path, env={"MISTRAL_API_KEY": api_key})
    assert run.returncode == 0, run.stderr
    match = re.search(rf"archived: {url}/(\d{{8}}T\d{{6}}Z-INC-real)/", run.stderr)
    assert match, run.stderr
    client = moto.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"runs/{match.group(1)}/")["Contents"]]
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"triage.ipynb", "triage.html", "triage.run.json"} <= names, names
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert api_key.encode() not in body and AWS_SECRET.encode() not in body, key
    record = json.loads(client.get_object(Bucket=bucket, Key=f"runs/{match.group(1)}/triage.run.json")["Body"].read())
    shown = _cli(moto, "show", "INC-real", "--json", "--output-dir", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["status"] == record["status"] == "succeeded"
    assert detail["notebooks"][0]["ipynb_exists"] and detail["notebooks"][0]["path"].startswith(url)
    assert detail["verdict"] == (record.get("verdict") or {}).get("line")
