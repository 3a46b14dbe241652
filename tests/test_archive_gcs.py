"""Issue 19: the archive on gs://, against gcp-storage-emulator (the GCS JSON API over real HTTP: gcsfs -> aiohttp).

The archive commands run as the real CLI in a subprocess, with only STORAGE_EMULATOR_HOST and
anonymous credentials (FSSPEC_GS_TOKEN=anon) in their environment; the same archive read from a
local folder is the ground truth. The fixtures and the checks read and write the emulator through
its JSON API with urllib (not gcsfs), and requests are counted from the emulator's own access log.
Cases mirror tests/test_archive_s3.py; S3 Object Lock has no gs:// counterpart here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_archive_s3 import _archive, _free_port, _without, tempfile_dir

from runbook_lib.records import remote

BIN = Path(sys.executable).parent


class Emulator:
    """gcp-storage-emulator on a free port, its access log, the environment a client needs, and raw JSON API calls."""

    def __init__(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "FSSPEC_GS_TOKEN": "anon"}

    def _call(self, method: str, path: str, body: bytes | None = None, kind: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": kind} if body is not None else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())

    def keys(self, bucket: str, prefix: str) -> list[str]:
        listed = json.loads(self._call("GET", f"/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix)}"))
        return sorted(item["name"] for item in listed.get("items", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self._call("GET", f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media")

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(key)}", body,
                   "application/octet-stream")

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, mark: int) -> list[str]:
        """'METHOD /path?query' of every request the emulator logged after `mark`."""
        text = self.log.read_bytes()[mark:].decode("utf-8", "replace")
        return re.findall(r'"((?:GET|HEAD|PUT|POST|DELETE|PATCH) \S+) HTTP/1\.[01]"', text)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    port = _free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(port),
                                 "--in-memory"], stdout=fh, stderr=subprocess.STDOUT)
    server = Emulator(port, log)
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: the emulator answers in ~1 s
            try:
                urllib.request.urlopen(server.url + "/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gcp-storage-emulator did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bucket(gcs: Emulator, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    gcs.create_bucket(name)
    return name


@pytest.fixture(autouse=True)
def _gcs_env(gcs: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's gcsfs (used to publish fixtures) talks to the emulator too, anonymously
    (fsspec read FSSPEC_GS_TOKEN when it was imported: its config is set directly)."""
    import fsspec.config

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})


def _cli(gcs: Emulator, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "RUNBOOK_", "GOOGLE_", "FSSPEC_", "STORAGE_EMULATOR"))} | gcs.env | (env or {})
    return subprocess.run([str(BIN / "runbook"), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120)


def _publish(folders: list[Path], url: str) -> None:
    fs = remote.preflight(url)
    for folder in folders:
        remote.upload(folder, url, fs=fs)


def test_list_over_gcs_is_the_local_list_with_one_listing_and_one_index_per_incident(gcs, bucket, tmp_path):
    local = tmp_path / "outputs"
    folders = _archive(local)
    url = f"gs://{bucket}/team-a"
    _publish(folders, url)
    assert f"team-a/{folders[0].name}/evidence-INC-1/logs/pods.jsonl" in gcs.keys(bucket, "team-a/")

    truth = _cli(gcs, "list", "--json", "--output-dir", str(local), cwd=tmp_path)
    mark = gcs.mark()
    got = _cli(gcs, "list", "--json", "--output-dir", url, cwd=tmp_path)
    requests = gcs.requests_since(mark)
    assert got.returncode == 0, got.stderr
    rows, expected = json.loads(got.stdout)["incidents"], json.loads(truth.stdout)["incidents"]
    assert len(rows) == len(folders) == 6
    assert _without(rows, "folder") == _without(expected, "folder")
    assert [r["folder"] for r in rows] == [f"{url}/{Path(r['folder']).name}" for r in expected]
    # the bound: one listing of the prefix (with the delimiter: bundles and notebooks are never
    # listed) plus one GET of each incident's incident.json, nothing else
    listings = [r for r in requests if r.startswith(f"GET /storage/v1/b/{bucket}/o?")]
    gets = sorted(r for r in requests if r not in listings)
    assert len(listings) == 1 and "delimiter=/" in listings[0] and "prefix=team-a/" in listings[0], requests
    assert gets == sorted(f"GET /download/storage/v1/b/{bucket}/o/team-a%2F{f.name}%2Fincident.json?alt=media"
                          for f in folders), requests

    table = _cli(gcs, "list", "--status", "triaged", "--output-dir", url, cwd=tmp_path)
    assert table.returncode == 0 and "3 of 6 incident(s) match the filters" in table.stdout, table


def test_show_and_report_over_gcs_read_as_the_local_archive(gcs, bucket, tmp_path):
    local = tmp_path / "outputs"
    folders = _archive(local, n=4)
    url = f"gs://{bucket}/archive"
    _publish(folders, url)

    shown = _cli(gcs, "show", "INC-0", "--json", "--output-dir", url, cwd=tmp_path)
    truth = json.loads(_cli(gcs, "show", "INC-0", "--json", "--output-dir", str(local), cwd=tmp_path).stdout)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["folder"] == f"{url}/{folders[0].name}"
    assert [(n["name"], n["status"], n["ipynb_exists"], n["html_exists"]) for n in detail["notebooks"]] == \
        [(n["name"], n["status"], n["ipynb_exists"], n["html_exists"]) for n in truth["notebooks"]]
    assert detail["notebooks"][0]["path"] == f"{url}/{folders[0].name}/triage.ipynb"
    assert {k: v for k, v in detail.items() if k not in ("folder", "notebooks")} == \
        {k: v for k, v in truth.items() if k not in ("folder", "notebooks")}
    text = _cli(gcs, "show", folders[1].name, "--output-dir", url, cwd=tmp_path)
    assert text.returncode == 0 and "INC-1" in text.stdout, text

    missing = _cli(gcs, "show", "INC-99", "--output-dir", url, cwd=tmp_path)
    assert missing.returncode == 2 and "INC-99" in missing.stderr and "INC-0" in missing.stderr, missing

    rep = _cli(gcs, "report", "--json", "--output-dir", url, cwd=tmp_path)
    truth_rep = _cli(gcs, "report", "--json", "--output-dir", str(local), "--plot", str(tmp_path / "l.png"),
                     cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout) == json.loads(truth_rep.stdout)
    assert json.loads(rep.stdout)["incidents"] == 4


def test_verify_over_gcs_rehashes_the_stored_bundle_and_catches_a_rewritten_object(gcs, bucket, tmp_path):
    local = tmp_path / "outputs"
    folder = _archive(local, n=1)[0]
    url = f"gs://{bucket}/arch"
    _publish([folder], url)

    ok = _cli(gcs, "verify", "INC-0", "--output-dir", url, cwd=tmp_path)
    assert ok.returncode == 0, ok
    assert ok.stdout.count("OK: 2 files match manifest.json") == 2, ok.stdout
    assert f"{url}/{folder.name}/evidence-INC-1" in ok.stdout
    assert "retention: not checked (gs:// has no S3 Object Lock)" in ok.stdout, ok.stdout

    # someone with write access rewrites one collected file in the bucket
    gcs.put(bucket, f"arch/{folder.name}/evidence-INC-1/logs/pods.jsonl", b'{"line": "all fine"}\n')
    bad = _cli(gcs, "verify", f"{url}/{folder.name}", cwd=tmp_path)  # the folder's own URL works too
    assert bad.returncode == 1, bad
    assert "logs/pods.jsonl: sha256 differs from the manifest" in bad.stdout


def test_run_writes_the_redacted_record_to_gcs_and_never_a_credential(gcs, bucket, tmp_path):
    """A run into gs:// uploads the record the local run writes (refused-run path: no kernel)."""
    planted = "sk-planted-" + "Q" * 24
    env = {"MISTRAL_API_KEY": planted}
    url = f"gs://{bucket}/runs"
    run = _cli(gcs, "run", "triage", "-p", "mistral_url", planted, "--incident-id", "INC-9", "--output-dir", url,
               cwd=tmp_path, env=env)
    local = _cli(gcs, "run", "triage", "-p", "mistral_url", planted, "--incident-id", "INC-9", "--output-dir",
                 str(tmp_path / "outputs"), cwd=tmp_path, env=env)
    assert run.returncode == local.returncode == 2, run
    assert re.search(rf"archived: {url}/\d{{8}}T\d{{6}}Z-INC-9/", run.stderr), run.stderr
    stored = {k.rsplit("/", 1)[-1]: gcs.get(bucket, k) for k in gcs.keys(bucket, "runs/")}
    written = {p.name: p.read_bytes() for p in (tmp_path / "outputs").rglob("*") if p.is_file()}
    assert set(stored) == set(written) and "triage.run.json" in stored
    remote_run, local_run = (json.loads(b) for b in (stored["triage.run.json"], written["triage.run.json"]))
    assert remote_run["parameters"] == local_run["parameters"] and remote_run["status"] == "failed"
    for blob in [*stored.values(), run.stdout.encode(), run.stderr.encode()]:
        assert planted.encode() not in blob
    assert not list(Path(tempfile_dir()).glob("runbook-stage-*/*INC-9*")), "the staging copy is removed"
    assert re.search(rf"record: {url}/\d{{8}}T\d{{6}}Z-INC-9/triage\.run\.json", run.stdout), run.stdout
    assert "runbook-stage-" not in run.stdout + run.stderr

    resp = _cli(gcs, "respond", "-p", "bogus", "1", "--incident-id", "INC-10", "--output-dir", url, cwd=tmp_path)
    assert resp.returncode == 2 and re.search(rf"archived: {url}/\d{{8}}T\d{{6}}Z-INC-10/", resp.stderr), resp
    listed = _cli(gcs, "list", "--json", "--output-dir", url, cwd=tmp_path)
    rows = json.loads(listed.stdout)["incidents"]
    assert sorted((r["id"], r["kind"], r["status"]) for r in rows) == \
        [("INC-10", "incident", "failed"), ("INC-9", "run", "failed")], listed


def test_clear_errors_missing_bucket_unreachable_endpoint_no_extra_no_retention(gcs, bucket, tmp_path, dead_port):
    gone = _cli(gcs, "list", "--output-dir", "gs://no-such-bucket/x", cwd=tmp_path)
    assert gone.returncode == 2 and "bucket 'no-such-bucket' does not exist" in gone.stderr, gone
    run = _cli(gcs, "run", "triage", "--output-dir", "gs://no-such-bucket/x", cwd=tmp_path)
    assert run.returncode == 2 and "does not exist" in run.stderr and "running triage" not in run.stderr, run

    empty = _cli(gcs, "list", "--output-dir", f"gs://{bucket}/nothing-yet", cwd=tmp_path)
    assert empty.returncode == 0 and "no incidents recorded under" in empty.stdout, empty
    assert "does not exist" not in empty.stdout

    # gcsfs alone would try 6 times over ~31 s of back-off: remote.py bounds it to 2 attempts
    down = _cli(gcs, "list", "--output-dir", f"gs://{bucket}/x", cwd=tmp_path,
                env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{dead_port}"})
    assert down.returncode == 2, down
    assert "--output-dir gs://" in down.stderr and "cannot be reached" in down.stderr, down.stderr
    assert "STORAGE_EMULATOR_HOST" in down.stderr and "Traceback" not in down.stderr, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    down_run = _cli(gcs, "run", "triage", "--output-dir", f"gs://{bucket}/x", cwd=tmp_path,
                    env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{dead_port}"})
    assert down_run.returncode == 2 and "cannot be reached" in down_run.stderr, down_run
    assert "running triage" not in down_run.stderr and "Traceback" not in down_run.stderr

    # S3 Object Lock retention has no gs:// counterpart here: refused, naming the option
    retain = _cli(gcs, "run", "triage", "--output-dir", f"gs://{bucket}/x", "--retain-days", "7", cwd=tmp_path)
    assert retain.returncode == 2 and "'--retain-days'" in retain.stderr and "s3://" in retain.stderr, retain
    env_retain = _cli(gcs, "respond", "--output-dir", f"gs://{bucket}/x", cwd=tmp_path,
                      env={"RUNBOOK_RETAIN_DAYS": "7"})
    assert env_retain.returncode == 2 and "'--retain-days'" in env_retain.stderr, env_retain
    assert gcs.keys(bucket, "x/") == [], "nothing written after a refusal"

    # an install without the [gcs] extra: gcsfs cannot be imported
    code = ("import sys; sys.modules['gcsfs'] = None; from runbook_lib.cli import main; "
            f"sys.exit(main(['list', '--output-dir', 'gs://{bucket}/x']))")
    full = {k: v for k, v in os.environ.items() if not k.startswith("FSSPEC_")} | gcs.env
    extra = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=full,
                           cwd=tmp_path)
    assert extra.returncode == 2, extra
    assert "needs gcsfs" in extra.stderr and "pip install 'mistral-runbooks[gcs]'" in extra.stderr, extra.stderr


@pytest.mark.notebook
def test_a_real_triage_run_lands_in_gcs_redacted_and_reads_back_as_its_local_copy(gcs, bucket, tmp_path, stack,
                                                                                   api_key):
    """`runbook run triage --output-dir gs://...` against the embedded stack: executed notebook, HTML and
    run.json in the bucket, the API key in none of them; list/show/report/verify over gs:// answer what
    they answer for a local copy of the same objects."""
    url = f"gs://{bucket}/runs"
    run = _cli(gcs, "run", "triage", "-q", "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url",
               stack.service_health_url, "-p", "prometheus_url", "", "-p", "timeout_s", "2",
               "--incident-id", "INC-real", "--output-dir", url, cwd=tmp_path, env={"MISTRAL_API_KEY": api_key})
    assert run.returncode == 0, run.stderr
    match = re.search(rf"archived: {url}/(\d{{8}}T\d{{6}}Z-INC-real)/", run.stderr)
    assert match, run.stderr
    name = match.group(1)
    keys = gcs.keys(bucket, f"runs/{name}/")
    assert {"triage.ipynb", "triage.html", "triage.run.json"} <= {k.rsplit("/", 1)[-1] for k in keys}, keys
    copy = tmp_path / "copy"
    for key in keys:  # the local copy, read back through the emulator's own API
        body = gcs.get(bucket, key)
        assert api_key.encode() not in body, key
        (copy / key).parent.mkdir(parents=True, exist_ok=True)
        (copy / key).write_bytes(body)
    record = json.loads((copy / f"runs/{name}/triage.run.json").read_text())
    assert record["status"] == "succeeded"
    local = str(copy / "runs")

    def both(*args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        return (_cli(gcs, *args, "--output-dir", url, cwd=tmp_path),
                _cli(gcs, *args, "--output-dir", local, cwd=tmp_path))

    got, truth = both("list", "--json")
    assert got.returncode == truth.returncode == 0, got.stderr
    assert _without(json.loads(got.stdout)["incidents"], "folder") == \
        _without(json.loads(truth.stdout)["incidents"], "folder") != []
    got, truth = both("show", "INC-real", "--json")
    assert got.returncode == truth.returncode == 0, got.stderr
    detail = json.loads(got.stdout)
    assert detail["status"] == "succeeded" and detail["notebooks"][0]["ipynb_exists"]
    assert detail["notebooks"][0]["path"] == f"{url}/{name}/triage.ipynb"
    assert json.loads(got.stdout.replace(url, "ROOT")) == json.loads(truth.stdout.replace(local, "ROOT"))
    got, truth = both("report", "--json")
    assert got.returncode == truth.returncode == 0, got.stderr
    assert json.loads(got.stdout) == json.loads(truth.stdout)
    # a plain run has no evidence bundle: verify refuses it alike, naming the run (tests above verify a bundle)
    got, truth = both("verify", "INC-real")
    assert got.returncode == truth.returncode == 2, (got, truth)
    # (the value echoed differs: over gs:// the id is already resolved to its folder name, as for s3://)
    assert got.stderr.split(" is invalid: ")[1] == truth.stderr.split(" is invalid: ")[1], (got.stderr, truth.stderr)
    assert name in got.stderr and "has none in its index" in got.stderr, got.stderr
