"""Every archived incident in tests/incidents/ is replayed and must compare the same (issue 20).

The corpus is made by `python -m tests.incidents.make_corpus` (real incidents on the embedded stack
with a real Prometheus: respond, evidence, postmortem). A change to the runbooks' logic that alters a
past verdict, severity, impact window, count, TTD/TTR or cause fails here, and the failure prints
`runbook replay --compare`'s table (the diff). Each replay runs the real CLI, which loads the bundle's
metrics into a real Prometheus through the real promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.record import MIME, read_records

# one worker runs the module (its fixture replays each incident once, not once per worker)
pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("replay-corpus")]
BIN = Path(sys.executable).parent
CORPUS = Path(__file__).parent / "incidents"
INCIDENTS = sorted(p.name for p in CORPUS.iterdir() if (p / "incident.json").is_file())


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "runbook"), "replay", *args, "-q"], capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def replays(tmp_path_factory, require_binary):
    require_binary("prometheus")
    require_binary("promtool")
    done = {}
    for name in INCIDENTS:
        tmp = tmp_path_factory.mktemp(f"corpus-{name}")
        copy = Path(shutil.copytree(CORPUS / name, tmp / "archive" / name))  # the corpus itself stays untouched
        # --strict: a corpus incident lacking any source (bundle, metrics, logs, parameters) is refused
        out = _replay(str(copy), "--output-dir", str(tmp / "replays"), "--compare", "--strict")
        folders = [p for p in (tmp / "replays").iterdir() if not p.name.startswith(".")] \
            if (tmp / "replays").exists() else []
        done[name] = (copy, folders, out)
    return done


def test_the_corpus_is_small_redacted_and_complete():
    classes = {json.loads((CORPUS / n / "incident.json").read_text()).get("error_class") for n in INCIDENTS}
    assert {"auth", "rate_limit", "provider_error", "network"} <= classes, (INCIDENTS, classes)  # each family
    for name in INCIDENTS:
        folder = CORPUS / name
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) < 1_000_000, name
        # what a full replay needs: triage's probes, a bundle with the counters, the original's postmortem
        assert "mistral_api" in read_records(folder / "triage.ipynb"), name
        assert list(folder.glob("evidence-*/metrics/requests_total_by_model_code.csv")), name
        assert "impact_window" in read_records(folder / "postmortem.ipynb"), name
        for path in files:  # make_corpus planted these in the environment: none may be in the corpus
            data = path.read_bytes()
            assert b"sk-planted-" not in data, path
            assert re.search(rb"sim-[A-Za-z0-9_-]{32}", data) is None, path  # the run's throwaway API key


@pytest.mark.parametrize("name", INCIDENTS)
def test_each_archived_incident_replays_the_same(replays, name):
    copy, folders, out = replays[name]
    assert out.returncode == 0, f"replaying tests/incidents/{name} changed a past verdict:\n{out.stdout}\n" \
                                f"{out.stderr[-3000:]}"
    [folder] = folders
    # the postmortem's numbers were compared, not skipped: they need the replay's Prometheus and postmortem
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    for fact in ("impact start", "impact end", "failed calls", "TTD (s)", "TTR (s)", "cause", "severity"):
        assert fact in rows and re.search(r"\bsame\b", rows[fact]), (fact, out.stdout)
    m = re.search(r"result: same \((\d+) fact\(s\) compared, 0 differ\)", out.stdout)
    assert m and int(m.group(1)) >= 19, out.stdout
    index = json.loads((folder / "incident.json").read_text())
    section = index["replay"]
    # the metrics the replay's runbooks read were the bundle's: loaded through promtool into a Prometheus
    # that scrapes nothing (the replayed service's live calls never reach it)
    assert section["prometheus"]["series"]["mistral_requests_total"] > 0
    assert section["afterwards"]["evidence"]["ok"] and section["afterwards"]["postmortem"]["ok"], section
    original_codes = read_records(copy / "triage.ipynb")["error_rate"]["errors_per_code"]
    replay_codes = read_records(folder / "triage.ipynb")["error_rate"]["errors_per_code"]
    assert original_codes and replay_codes.keys() == original_codes.keys(), (original_codes, replay_codes)
    assert "prometheus_url" in section["parameters"]["replaced"]
    assert section["parameters"]["replaced"]["prometheus_url"]["now"] == section["prometheus"]["url"]
    # the cluster the runbooks read held the original's pod logs and events
    assert section["cluster"]["logs"]["lines"] > 0 and section["cluster"]["events"]["added"] > 0, section["cluster"]
    assert not section["cluster"]["missing"]
    # `runbook show` says what the folder is
    shown = subprocess.run([str(BIN / "runbook"), "show", "--output-dir", str(folder.parent), folder.name],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and f"replay of: {json.loads((copy / 'incident.json').read_text())['id']}" \
        in shown.stdout, shown.stdout + shown.stderr


def _answers(folder: Path) -> list[tuple]:
    """What triage's probes of the API got: status, body detail, rate-limit headers, Retry-After, class."""
    probes = read_records(folder / "triage.ipynb")["mistral_api"]["probes"]
    return sorted((p["status_code"] or 0, p["detail"] if p["status_code"] else "", json.dumps(p["ratelimit"] or {},
                   sort_keys=True), p["retry_after"] or "", p["classification"]) for p in probes)


@pytest.mark.parametrize("name", INCIDENTS)
def test_the_replays_probes_got_the_recorded_answers(replays, name):
    """The simulator played the original's answers back (issue 20): each probe of the replay's triage got what
    one of the original's got (status, body, rate-limit headers, Retry-After), and as slowly (ground truth:
    the original's recorded probes, not the simulator's mode)."""
    copy, [folder], _ = replays[name]
    section = json.loads((folder / "incident.json").read_text())["replay"]
    assert section["fault"]["recorded"]["answers"] >= 5, section["fault"]
    assert _answers(folder) == _answers(copy)
    ours = read_records(copy / "triage.ipynb")["mistral_api"]
    theirs = read_records(folder / "triage.ipynb")["mistral_api"]
    if ours["latency_ms_median"] is not None:  # answered: the recorded latency, give or take the machine's load
        assert abs(theirs["latency_ms_median"] - ours["latency_ms_median"]) < 250, (ours, theirs)


def test_an_altered_past_count_fails_with_the_diff(replays, tmp_path):
    """The original's postmortem says 10 more failed calls than its metrics hold: --compare exits 1 naming it."""
    name = INCIDENTS[0]
    copy, [replay], _ = replays[name]
    altered = Path(shutil.copytree(copy, tmp_path / name))
    nb = json.loads((altered / "postmortem.ipynb").read_text())
    changed = 0
    for cell in nb["cells"]:
        for output in cell.get("outputs") or []:
            payload = (output.get("data") or {}).get(MIME)
            if isinstance(payload, dict) and payload.get("name") == "impact_window":
                was = payload["value"]["failed_requests"]
                payload["value"]["failed_requests"] = was + 10
                changed += 1
    assert changed == 1
    (altered / "postmortem.ipynb").write_text(json.dumps(nb))
    out = _replay(str(altered), "--compare", "--against", str(replay))
    assert out.returncode == 1, out.stdout + out.stderr
    [line] = [x for x in out.stdout.splitlines() if x.startswith("failed calls")]
    assert f"{was + 10}" in line and f"{was}" in line and "DIFFERS" in line, line
    assert "result: DIFFERENT: 1 fact(s) differ: failed calls" in out.stdout, out.stdout
