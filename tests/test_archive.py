"""The incident archive: list, find, show, report and verify over real folders built in tmp_path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runbook_lib.errors import ParameterError, RunbookError
from runbook_lib.records import archive, bundle, report, verify
from runbook_lib.records.format import format_detail, human_duration
from runbook_lib.records.incident import write_index
from runbook_lib.run.execute import RunResult

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _incident(root: Path, stamp: str, incident_id: str, **fields: object) -> Path:
    """An incident folder as `runbook respond` leaves it (index only; notebooks when asked)."""
    folder = root / f"{stamp}-{incident_id}"
    folder.mkdir(parents=True)
    index = {"id": incident_id, "folder": str(folder), "started_at": None, "finished_at": None,
             "status": "diagnosed", "severity": None, "error_class": None, "verdict": None, "notebooks": [],
             "changes_applied": [], **fields}
    write_index(folder, index)
    return folder


def _run(root: Path, stamp: str, incident_id: str, *, status: str = "succeeded", verdict: dict | None = None,
         started: str = "2026-11-20T08:00:00Z", finished: str = "2026-11-20T08:00:40Z") -> Path:
    """A plain `runbook run triage` record: triage.run.json exactly as execute.py writes it."""
    folder = root / f"{stamp}-{incident_id}"
    folder.mkdir(parents=True)
    result = RunResult("triage", status, str(folder), str(folder / "triage.ipynb"), None, started, finished, 40.0,
                       incident_id, verdict=verdict, error=None if status == "succeeded" else "KeyError: x",
                       parameters={"incident_id": incident_id})
    (folder / "triage.run.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    return folder


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`runbook ARGS` in `cwd`; $RUNBOOK_OUTPUTS only when `env` sets it (else --output-dir means ./outputs)."""
    full = {k: v for k, v in os.environ.items() if k != "RUNBOOK_OUTPUTS"} | (env or {})
    return subprocess.run([str(BIN / "runbook"), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=60)


CHANGE = {"record": "change_env", "action": "set env", "target": "deployment/mistral-service",
          "at": "2026-11-23T10:15:20Z", "who": "bob", "undo": "kubectl set env deployment/mistral-service X-",
          "verified": True}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three incidents (two share INC-42), one plain run, and the non-record entries of outputs/."""
    out = tmp_path / "outputs"
    _incident(out, "20261120T090000Z", "INC-42", started_at="2026-11-20T09:00:00Z",
              finished_at="2026-11-20T09:01:05Z", status="triaged", severity="P3", error_class="resolved",
              notebooks=[{"name": "triage", "status": "succeeded"}])
    _incident(out, "20261123T101500Z", "INC-42", started_at="2026-11-23T10:15:00Z",
              finished_at="2026-11-23T10:15:31Z", severity="P2", error_class="rate_limit",
              verdict="P2 rate limited -> diagnose_rate_limit", diagnosis="429 from Mistral: lower concurrency",
              notebooks=[{"name": "triage", "status": "succeeded", "path": "/gone/triage.ipynb", "html": None,
                          "verdict": "P2 rate limited", "error": None, "duration_s": 3.2},
                         {"name": "diagnose_rate_limit", "status": "succeeded", "verdict": "lower concurrency"}],
              changes_applied=[CHANGE],
              evidence={"bundle": "/abs/evidence-INC-42", "archive": "/abs/evidence-INC-42.tar.gz", "files": 9,
                        "missing": ["metrics (not configured)"],
                        "window": {"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T10:15:00Z", "seconds": 900}},
              postmortem={"markdown": "/abs/postmortem.md", "duration_s": 312, "time_to_detect_s": 45,
                          "time_to_mitigate_s": 130, "time_to_resolve_s": 312, "failed_requests": 1234,
                          "failed_requests_source": "metrics", "affected_models": ["mistral-small-latest"]})
    _incident(out, "20261122T120000Z", "INC-7", started_at="2026-11-22T12:00:00Z", status="failed",
              severity="P1", error_class="auth")
    _run(out, "20261120T080000Z", "INC-run", status="failed",
         verdict={"line": "P2 auth -> diagnose_auth", "severity": "P2", "branch": "auth"})
    (out / "README.md").write_text("# outputs/\n")
    (out / ".embedded").mkdir()
    (out / "report.png").write_bytes(b"old")
    return out


# ---------------------------------------------------------------------------------------------- list


def test_list_is_newest_first_with_summaries_from_the_index_and_run_json(root):
    rows = archive.list_incidents(root)
    assert [(r["id"], r["name"][:16]) for r in rows] == [
        ("INC-42", "20261123T101500Z"), ("INC-7", "20261122T120000Z"), ("INC-42", "20261120T090000Z"),
        ("INC-run", "20261120T080000Z")]
    newest = rows[0]
    assert (newest["severity"], newest["error_class"], newest["status"]) == ("P2", "rate_limit", "diagnosed")
    assert (newest["duration_s"], newest["impact_s"], newest["changes"]) == (31.0, 312.0, 1)
    assert newest["notebooks"] == ["triage", "diagnose_rate_limit"]
    assert newest["has_evidence"] and newest["has_postmortem"] and newest["ttd_s"] == 45.0
    assert rows[1]["duration_s"] is None and not rows[1]["has_evidence"]  # still no finished_at
    run = rows[3]
    assert (run["kind"], run["severity"], run["error_class"], run["status"]) == ("run", "P2", "auth", "failed")
    assert run["duration_s"] == 40.0 and run["notebooks"] == ["triage"]


def test_filters_combine_and_reject_bad_values_by_name(root):
    assert [r["id"] for r in archive.list_incidents(root, severity="p2")] == ["INC-42", "INC-run"]
    assert [r["id"] for r in archive.list_incidents(root, error_class="auth")] == ["INC-7", "INC-run"]
    assert [r["id"] for r in archive.list_incidents(root, status="failed", error_class="auth", severity="P1")] == [
        "INC-7"]
    assert [r["start"] for r in archive.list_incidents(root, since="2026-11-22")] == [
        "2026-11-23T10:15:00Z", "2026-11-22T12:00:00Z"]
    assert len(archive.list_incidents(root, since="2026-11-20T08:30Z")) == 3
    assert [r["id"] for r in archive.list_incidents(root, limit=1)] == ["INC-42"]
    for kwargs, name in (({"severity": "P5"}, "severity"), ({"since": "last week"}, "since"), ({"limit": 0}, "limit"),
                         ({"status": "done"}, "status"), ({"error_class": "x"}, "error_class")):
        with pytest.raises(ParameterError) as err:
            archive.list_incidents(root, **kwargs)
        assert err.value.name == name


def test_bad_folders_are_skipped_warned_and_counted_never_fatal(root, capsys):
    (root / "20261124T000000Z-INC-half").mkdir()
    (root / "20261124T000000Z-INC-half" / "incident.json").write_text('{"id": "INC-half", "stat')
    (root / "20261124T000001Z-INC-list").mkdir()
    (root / "20261124T000001Z-INC-list" / "incident.json").write_text("[1, 2]")
    (root / "20261124T000002Z-INC-running").mkdir()  # a plain run still in progress: no run.json yet
    (root / "evidence-INC-9").mkdir()  # not a record (no index, no run.json, no stamp): ignored silently
    (root / "evidence-INC-9" / "manifest.json").write_text("{}")
    odd = _incident(root, "20261124T000003Z", "INC-odd", started_at=12, notebooks="triage", changes_applied=None,
                    severity=["P1"], postmortem="yes")
    found = archive.scan(root)
    assert sorted(Path(f).name for f, _ in found.skipped) == [
        "20261124T000000Z-INC-half", "20261124T000001Z-INC-list", "20261124T000002Z-INC-running"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("runbook: skipped ") for line in lines)
    assert any("not valid JSON" in line for line in lines) and any("not a JSON object" in line for line in lines)
    weird = next(s for s in found.incidents if s["id"] == "INC-odd")  # wrong types read as unknown
    assert weird["folder"] == str(odd) and weird["start"] == "2026-11-24T00:00:03Z"  # from the folder name
    assert (weird["severity"], weird["notebooks"], weird["changes"], weird["has_postmortem"]) == (None, [], 0, False)
    assert len(found.incidents) == 5


def test_empty_or_missing_archive_lists_nothing(tmp_path):
    assert archive.list_incidents(tmp_path / "nowhere") == []
    assert archive.scan(tmp_path).incidents == []


# ---------------------------------------------------------------------------------------------- find, show


def test_find_by_id_folder_name_and_path_newest_wins(root, tmp_path, monkeypatch):
    newest = root / "20261123T101500Z-INC-42"
    assert archive.find(root, "INC-42") == newest.resolve()
    assert archive.find(root, "20261120T090000Z-INC-42") == (root / "20261120T090000Z-INC-42").resolve()
    assert archive.find(root, str(newest)) == newest.resolve()
    assert archive.find(root, newest) == newest.resolve()
    monkeypatch.chdir(tmp_path)
    assert archive.find("outputs", "outputs/20261122T120000Z-INC-7") == (root / "20261122T120000Z-INC-7").resolve()
    assert archive.find(root, "INC-run") == (root / "20261120T080000Z-INC-run").resolve()
    with pytest.raises(ParameterError) as err:
        archive.find(root, "INC-404")
    assert err.value.name == "incident" and err.value.value == "INC-404"
    assert "INC-42, INC-7" in str(err.value) and "INC-run" in str(err.value)
    with pytest.raises(ParameterError, match="none"):
        archive.find(tmp_path / "empty", "INC-1")


def test_show_has_the_index_file_existence_and_other_folders(root):
    folder = root / "20261123T101500Z-INC-42"
    (folder / "triage.ipynb").write_text("{}")  # the recorded /gone/ path moved: found beside the index
    (folder / "extra.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {"runbook": {"status": "timed_out", "verdict": None}}}))
    detail = archive.show(root, "INC-42")
    nbs = {nb["name"]: nb for nb in detail["notebooks"]}
    assert nbs["triage"]["path"] == str(folder / "triage.ipynb") and nbs["triage"]["ipynb_exists"]
    assert not nbs["triage"]["html_exists"] and not nbs["diagnose_rate_limit"]["ipynb_exists"]
    assert nbs["extra"]["status"] == "timed_out"  # not in the index: status from the notebook's metadata
    assert [o["name"] for o in detail["others"]] == ["20261120T090000Z-INC-42"]
    assert detail["changes_applied"] == [CHANGE] and detail["postmortem"]["time_to_detect_s"] == 45

    text = format_detail(detail)
    for expected in ("INC-42  (incident)", "response:  2026-11-23 10:15:00 UTC .. ", "(31s)", "severity:  P2",
                     "diagnosis: 429 from Mistral: lower concurrency",
                     "2026-11-23 10:15:20 UTC by bob: set env on deployment/mistral-service (verified)",
                     "undo: kubectl set env deployment/mistral-service X-", "bundle:    /abs/evidence-INC-42",
                     "missing:   metrics (not configured)", "markdown:  /abs/postmortem.md",
                     "time to detect 45s, to mitigate 2m10s, to resolve 5m12s", "20261120T090000Z-INC-42",
                     "html:    -  (missing)"):
        assert expected in text, expected


def test_show_spells_out_a_severity_that_moved_and_labels_triages_line(root):
    """Headline P2 beside triage's "P3 ..." line read as two severities for one incident."""
    history = [{"at": "2026-11-23T10:15:02Z", "by": "triage", "from": None, "to": "P3", "why": "occasional errors"},
               {"at": "2026-11-23T10:15:09Z", "by": "diagnose_rate_limit", "from": "P3", "to": "P2",
                "why": "rate limited (429)"}]
    _incident(root, "20261124T080000Z", "INC-moved", started_at="2026-11-24T08:00:00Z", severity="P2",
              verdict="P3 partial rate limited -> diagnose_rate_limit", severity_history=history)
    text = format_detail(archive.show(root, "INC-moved"))
    assert ("severity:  P2  (P3 by triage at 2026-11-23 10:15:02 UTC; raised to P2 by diagnose_rate_limit at "
            "2026-11-23 10:15:09 UTC: rate limited (429))") in text
    assert "triage:    P3 partial rate limited -> diagnose_rate_limit" in text and "verdict:" not in text
    steady = format_detail(archive.show(root, "20261123T101500Z-INC-42"))  # no history: the level alone
    assert "severity:  P2\n" in steady


def test_show_names_the_alert_that_opened_an_incident_and_those_that_joined_it(root):
    alerts = [{"status": "firing", "name": "MistralServerErrors", "fingerprint": "aa11"},
              {"status": "firing", "name": "MistralErrorRateHigh", "fingerprint": "bb22"},
              {"status": "resolved", "name": "MistralServerErrors", "fingerprint": "aa11"},
              {"status": "resolved", "name": "MistralErrorRateHigh", "fingerprint": "bb22"}]
    _incident(root, "20261126T000000Z", "INC-alert", source="alertmanager", alert_state="resolved",
              alert={"name": "MistralServerErrors", "fingerprint": "aa11"}, alerts=alerts,
              resolved={"at": "2026-11-26T00:10:00Z"})
    text = format_detail(archive.show(root, "INC-alert"))
    assert "MistralServerErrors (aa11), resolved at 2026-11-26 00:10:00 UTC; 4 notification(s)" in text
    assert "joined by: MistralErrorRateHigh" in text


def test_show_reads_notebook_metadata_only_when_the_index_lacks_the_status(root):
    folder = _incident(root, "20261125T000000Z", "INC-meta", notebooks=[{"name": "triage", "status": None}])
    (folder / "triage.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {"runbook": {"status": "failed", "verdict": {"line": "P1 auth"}}}}))
    nb = archive.show(root, "INC-meta")["notebooks"][0]
    assert (nb["status"], nb["verdict"]) == ("failed", "P1 auth")


def test_show_of_a_run_record_and_of_a_corrupt_folder(root):
    detail = archive.show(root, "INC-run")
    assert detail["kind"] == "run" and detail["notebooks"][0]["error"] == "KeyError: x"
    assert "INC-run  (plain run)" in format_detail(detail)
    (root / "20261124T000000Z-INC-bad").mkdir()
    (root / "20261124T000000Z-INC-bad" / "incident.json").write_text("{")
    with pytest.raises(RunbookError, match="not valid JSON"):
        archive.show(root, "20261124T000000Z-INC-bad")


def test_text_never_carries_terminal_control_sequences(root):
    _incident(root, "20261126T000000Z", "INC-esc", verdict="\x1b]0;pwned\x07 P1", changes_applied=[
        {**CHANGE, "undo": "kubectl rollout undo\x1b[2J"}])
    text = format_detail(archive.show(root, "INC-esc"))
    assert "\x1b" not in text and "\x07" not in text and "kubectl rollout undo?[2J" in text
    assert human_duration(65) == "1m05s" and human_duration(7380) == "2h03m"
    assert human_duration(None) == "-" and human_duration(31.4) == "31s"


# ---------------------------------------------------------------------------------------------- report


def _pm(ttd, ttm, ttr):
    return {"markdown": "pm.md", "time_to_detect_s": ttd, "time_to_mitigate_s": ttm, "time_to_resolve_s": ttr}


def test_report_counts_and_daily_medians_by_hand(tmp_path):
    out = tmp_path / "out"
    # 2026-11-01: three with postmortems (ttd 30, 90, 60 -> 60; ttm 100, 300, 200 -> 200; ttr 400, 600 -> 500,
    # the third's resolve time unknown) and one without (counted, not in the medians).
    _incident(out, "20261101T010000Z", "A", started_at="2026-11-01T01:00:00Z", severity="P2",
              error_class="rate_limit", postmortem=_pm(30, 100, 400))
    _incident(out, "20261101T020000Z", "B", started_at="2026-11-01T02:00:00Z", severity="P2",
              error_class="rate_limit", postmortem=_pm(90, 300, 600))
    _incident(out, "20261101T030000Z", "C", started_at="2026-11-01T03:00:00Z", severity="P1",
              error_class="auth", postmortem=_pm(60, 200, None))
    _incident(out, "20261101T040000Z", "D", started_at="2026-11-01T04:00:00Z", severity="P1", error_class="auth")
    # 2026-11-02: two (ttd 10, 20 -> 15), one of unknown class and severity; 2026-11-03: none with a postmortem.
    _incident(out, "20261102T230000Z", "E", started_at="2026-11-02T23:00:00Z", severity="P3",
              error_class="rate_limit", postmortem=_pm(10, 50, 70))
    _incident(out, "20261102T010000Z", "F", started_at="2026-11-02T01:00:00Z", postmortem=_pm(20, 60, 80))
    _run(out, "20261103T000000Z", "G", started="2026-11-03T00:00:00Z", finished="2026-11-03T00:00:40Z",
         verdict={"line": "x", "severity": "P2", "branch": "auth"})

    rep = report.report(out)
    assert (rep["incidents"], rep["without_postmortem"], rep["undated"], rep["skipped"]) == (7, 2, 0, 0)
    counts = rep["counts"]
    assert list(counts.columns) == ["P1", "P2", "P3", "unknown"]
    assert counts.loc["rate_limit"].tolist() == [0, 2, 1, 0]
    assert counts.loc["auth"].tolist() == [2, 1, 0, 0]
    assert counts.loc["unknown"].tolist() == [0, 0, 0, 1]
    timing = rep["timing"]
    assert list(timing.index) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert timing["incidents"].tolist() == [4, 2, 1] and timing["postmortems"].tolist() == [3, 2, 0]
    day1, day2 = timing.loc["2026-11-01"], timing.loc["2026-11-02"]
    assert (day1["median_ttd_s"], day1["median_ttm_s"], day1["median_ttr_s"]) == (60, 200, 500)
    assert (day2["median_ttd_s"], day2["median_ttm_s"], day2["median_ttr_s"]) == (15, 55, 75)
    assert timing.loc["2026-11-03"].isna()["median_ttd_s"]
    plain = report.report_json(rep)
    assert plain["timing"]["2026-11-03"]["median_ttd_s"] is None and plain["counts"]["auth"]["P1"] == 2
    json.dumps(plain)

    png = report.plot_report(rep, tmp_path / "plots" / "report.png")
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_of_an_empty_archive_is_still_a_png(tmp_path):
    png = report.plot_report(report.report(tmp_path), tmp_path / "empty.png")
    assert png.read_bytes().startswith(PNG_MAGIC)


# ---------------------------------------------------------------------------------------------- verify


def _bundle(parent: Path, name: str = "evidence-INC-42") -> tuple[Path, Path]:
    with bundle.BundleWriter(parent, name, window={"start": "a", "end": "b"}) as b:
        b.add_text("logs/pods.jsonl", '{"line": "429 Too Many Requests"}\n', what="logs", source="kubectl logs")
        b.add_json("k8s/events.json", [{"reason": "BackOff"}], what="events", source="kubectl get events")
        b.add_missing("metrics", "prometheus_url", "not configured")
    return b.folder, b.archive


def _rewrite_archive(archive_path: Path, change: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> None:
    """The same archive with some members' bytes replaced (and optional extra members): a tampered copy."""
    with tarfile.open(archive_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(archive_path, "w:gz") as tar:
        for member, data in members:
            data = change.get(member.name, data)
            if data is not None:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)


def test_verify_intact_then_tampered_folder_and_archive(tmp_path):
    folder, tgz = _bundle(tmp_path)
    assert [(r.ok, r.files) for r in verify.verify(tmp_path, folder)] == [(True, 2)]
    ok = _cli("verify", str(tgz), cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 2 files match manifest.json"), ok

    (folder / "logs" / "pods.jsonl").write_bytes(b'{"line": "all fine"}\n')
    bad = _cli("verify", str(folder), cwd=tmp_path)
    assert bad.returncode == 1 and "logs/pods.jsonl: sha256 differs from the manifest" in bad.stdout

    _rewrite_archive(tgz, {"evidence-INC-42/k8s/events.json": b"[]\n"})
    bad = _cli("verify", str(tgz), cwd=tmp_path)
    assert bad.returncode == 1 and "evidence-INC-42/k8s/events.json: sha256 differs" in bad.stdout
    assert "logs/pods.jsonl" not in bad.stdout  # the archive's copy of the log is intact


def test_verify_flags_unlisted_files_unsafe_members_and_garbage(tmp_path):
    folder, tgz = _bundle(tmp_path)
    (folder / "planted.txt").write_text("not collected")
    assert verify.verify_bundle(folder).problems == ["planted.txt: not in the manifest"]
    escape = tarfile.TarInfo("../escape.txt")
    escape.size = 3
    link = tarfile.TarInfo("evidence-INC-42/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _rewrite_archive(tgz, {}, [escape, link])
    result = verify.verify_bundle(tgz)
    assert not result.ok and any("../escape.txt: path outside" in p for p in result.problems)
    assert any("link: a link or special file" in p for p in result.problems)
    assert not (tmp_path / "escape.txt").exists()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    assert "not a readable .tar.gz" in verify.verify_bundle(junk).problems[0]


def test_verify_an_incident_checks_its_bundle_and_archive(tmp_path):
    out = tmp_path / "outputs"
    folder = _incident(out, "20261123T101500Z", "INC-42")
    bundle_dir, tgz = _bundle(folder)
    write_index(folder, {"id": "INC-42", "evidence": {"bundle": str(bundle_dir), "archive": str(tgz), "files": 2}})
    ok = _cli("verify", "INC-42", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.count("OK: 2 files match manifest.json") == 2, ok
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64  # a forged manifest in the folder; the archive disagrees
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    bad = _cli("verify", str(folder), cwd=tmp_path)
    forged = manifest["files"][0]["path"]
    assert bad.returncode == 1 and "manifest.json differs" in bad.stdout and f"{forged}: sha256" in bad.stdout
    _incident(out, "20261124T000000Z", "INC-43")
    none = _cli("verify", "INC-43", cwd=tmp_path)
    assert none.returncode == 2 and "has none" in none.stderr
    missing = _cli("verify", str(tmp_path / "nope.tar.gz"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "'bundle'" in missing.stderr


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_list_table_footer_json_and_option_errors(root, tmp_path):
    (root / "20261124T000000Z-INC-half").mkdir()
    (root / "20261124T000000Z-INC-half" / "incident.json").write_text("{")
    res = _cli("list", cwd=tmp_path)  # default --output-dir outputs, relative to the working directory
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    # IMPACT (the postmortem's measured duration) and RUN (how long the runbooks ran) are distinct columns
    assert lines[0].split() == ["ID", "START", "(UTC)", "SEV", "CLASS", "STATUS", "IMPACT", "RUN", "CHANGES",
                                "FOLDER"]
    assert lines[1].split() == ["INC-42", "2026-11-23", "10:15", "P2", "rate_limit", "diagnosed", "5m12s", "31s", "1",
                                "20261123T101500Z-INC-42"]
    assert lines[3].split()[6:8] == ["-", "1m05s"]
    assert len({line.index("STATUS") if i == 0 else len(line[:lines[0].index("STATUS")]) for i, line in
                enumerate(lines[:5])}) == 1  # aligned columns
    assert lines[-1] == "4 incident(s); 1 unreadable folder(s) skipped (warnings above)"
    assert "skipped" in res.stderr and "INC-half" in res.stderr

    res = _cli("list", "--output-dir", str(root), "--severity", "P2", "--limit", "1", "--json", cwd=tmp_path)
    assert res.returncode == 0 and [r["id"] for r in json.loads(res.stdout)["incidents"]] == ["INC-42"]
    filtered = _cli("list", "--class", "auth", cwd=tmp_path)
    assert filtered.stdout.splitlines()[-1].startswith("2 of 4 incident(s) match the filters")
    for option, value in (("--severity", "P9"), ("--since", "yesterday"), ("--limit", "0"), ("--class", "dns")):
        res = _cli("list", option, value, cwd=tmp_path)
        assert res.returncode == 2 and option in res.stderr, (option, res.stderr)
    empty = _cli("list", "--output-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert empty.returncode == 0 and "no incidents recorded" in empty.stdout


def test_cli_output_dir_defaults_to_runbook_outputs_like_the_notebooks(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # no ./outputs here: only $RUNBOOK_OUTPUTS can point at the archive
    elsewhere.mkdir()
    res = _cli("list", cwd=elsewhere, env={"RUNBOOK_OUTPUTS": str(root)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "4 incident(s)"
    shown = _cli("list", "--help", cwd=elsewhere, env={"RUNBOOK_OUTPUTS": str(root)}).stdout
    assert f"(default:{root})" in "".join(shown.split())  # argparse wraps (and breaks) a long path
    res = _cli("show", "INC-7", cwd=elsewhere, env={"RUNBOOK_OUTPUTS": str(root)})
    assert res.returncode == 0 and "INC-7  (incident)" in res.stdout, res.stderr
    empty = tmp_path / "empty"
    res = _cli("list", "--output-dir", str(empty), cwd=elsewhere, env={"RUNBOOK_OUTPUTS": str(root)})
    assert res.returncode == 0 and f"no incidents recorded under {empty}" in res.stdout  # the flag still wins
    res = _cli("list", cwd=elsewhere)
    assert "no incidents recorded under outputs" in res.stdout  # unset: ./outputs, as before


def test_cli_show_and_unknown_ref(root, tmp_path):
    res = _cli("show", "INC-42", "--output-dir", str(root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "undo: kubectl set env deployment/mistral-service X-" in res.stdout and "by bob" in res.stdout
    res = _cli("show", "INC-42", "--json", "--output-dir", str(root), cwd=tmp_path)
    assert json.loads(res.stdout)["changes_applied"][0]["who"] == "bob"
    res = _cli("show", "INC-404", "--output-dir", str(root), cwd=tmp_path)
    assert res.returncode == 2 and "'incident'" in res.stderr and "INC-404" in res.stderr and not res.stdout


def test_cli_report_prints_tables_and_writes_the_png(root, tmp_path):
    (root / "report.png").unlink()
    res = _cli("report", "--output-dir", str(root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "rate_limit" in res.stdout and "2026-11-23" in res.stdout and "median_ttd_s" in res.stdout
    assert "3 incident(s) without a postmortem" in res.stdout and f"plot: {root / 'report.png'}" in res.stdout
    assert (root / "report.png").read_bytes().startswith(PNG_MAGIC)
    empty = _cli("report", "--output-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert empty.returncode == 0 and "nothing to report" in empty.stdout


@pytest.mark.parametrize("modules", ["runbook_lib.cli, runbook_lib.records.archive",
                                     "runbook_lib.records.format", "runbook_lib.records.report",
                                     "runbook_lib.records.verify"])
def test_archive_and_cli_stay_light_and_classes_match_the_decision_tree(modules):
    """`runbook list` imports cli, archive and format; report imports pandas only when it reports."""
    from runbook_lib.analysis import decision

    assert set(archive.CLASSES) == set(decision.NOTEBOOK)
    heavy = "('pandas', 'matplotlib', 'runbook_lib.sources.probes')"
    probe = subprocess.run([sys.executable, "-c", f"import sys, {modules}; "
                            f"print(sorted(m for m in {heavy} if m in sys.modules))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]", probe


def test_listing_a_thousand_incidents(tmp_path):
    """All 1,000 listed, none skipped. Its speed is measured in benchmarks/evidence.py, not here: a timed
    test fails on a loaded machine and proves nothing about the code."""
    out = tmp_path / "outputs"
    for i in range(1000):
        _incident(out, f"2026{1 + i % 12:02d}{1 + i % 28:02d}T{i % 24:02d}0000Z", f"INC-{i}",
                  started_at="2026-11-01T00:00:00Z", finished_at="2026-11-01T00:05:00Z",
                  notebooks=[{"name": "triage", "status": "succeeded", "verdict": "v" * 200}] * 2,
                  changes_applied=[CHANGE], postmortem=_pm(1, 2, 3))
    res = _cli("list", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "1000 incident(s)"
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 + 1000 + 1 and not res.stderr.strip(), res.stderr[-500:]
