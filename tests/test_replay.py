"""`runbook replay` (issue 20, first slice): an archived incident rebuilt on the embedded stack.

The originals are real incidents: `respond` on the embedded stack with a fault injected
(rate_limited, auth_failure), once per module. Each replay runs the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.record import MIME, read_records

pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("replay")]  # one worker: its fixtures run once
BIN = Path(sys.executable).parent
# mode injected -> (error class, routed notebook) respond gave it (tests/test_respond.py's ground truth)
EXPECTED = {"rate_limited": ("rate_limit", "diagnose_rate_limit"), "auth_failure": ("auth", "diagnose_auth")}
REAL = {"mistral_url": "https://api.mistral.ai", "service_health_url": "https://yourapp.example.com/health",
        "prometheus_url": "http://prometheus.monitoring:9090", "kubeconfig": "/home/alice/.kube/config"}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One incident folder per mode, made by `respond` against the stack with that fault."""
    from runbook_lib.run.execute import run_notebook
    from runbook_lib.run.respond import respond
    from runbook_lib.sim.kube import KubeEmulator, file_log_source
    from runbook_lib.sim.stack import EmbeddedStack

    root = tmp_path_factory.mktemp("originals")
    folders = {}
    with pytest.MonkeyPatch.context() as mp:
        key = "sim-" + secrets.token_urlsafe(24)
        mp.setenv("MISTRAL_API_KEY", key)
        mp.delenv("KUBECONFIG", raising=False)
        for mode in EXPECTED:
            with tempfile.TemporaryDirectory() as tmp:
                log = f"{tmp}/service.log"
                with EmbeddedStack(api_key=key, rate=20.0, log_path=log) as st, \
                        KubeEmulator(log_source=file_log_source(log), api_key=key) as kube:
                    st.set_mode(mode)
                    assert st.wait_for_service_status({"down"}, timeout_s=10)
                    index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                                     "prometheus_url": "", "kubeconfig": str(kube.write_kubeconfig(f"{tmp}/kc")),
                                     "timeout_s": 2.0, "incident_id": f"INC-{mode}", "sample_requests": 2,
                                     "sample_interval_s": 0.1}, output_root=root, progress=False)
                    if mode == "rate_limited":  # its evidence bundle too: pod logs, records, a .tar.gz
                        evidence = run_notebook("evidence", {"incident_folder": index["folder"], "prometheus_url": "",
                                                             "kubeconfig": f"{tmp}/kc", "timeout_s": 2.0,
                                                             "margin": "2m"},
                                                output_root=root, progress=False, record_dir=Path(index["folder"]))
                        assert evidence.ok, evidence.error
            assert (index["error_class"], index["notebooks"][-1]["name"]) == EXPECTED[mode], index
            folders[mode] = Path(index["folder"])
    return folders


def _copy(folder: Path, into: Path) -> Path:
    return Path(shutil.copytree(folder, into / folder.name))


def _replay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "runbook"), "replay", *args, "-q"], capture_output=True, text=True,
                          timeout=180, env=env)


def _name_real_endpoints(folder: Path) -> None:
    """Make the copy's recorded parameters name a real API, service, Prometheus and cluster."""
    for run in folder.glob("*.run.json"):
        value = json.loads(run.read_text())
        value["parameters"].update({k: v for k, v in REAL.items() if k in value["parameters"]})
        run.write_text(json.dumps(value))


@pytest.fixture(scope="module")
def replayed(originals, tmp_path_factory):
    """Each original, copied with its parameters naming real endpoints, replayed by the CLI with --compare.

    The CLI's environment holds a planted on-call key and Slack token: neither may reach the replay.
    """
    done = {}
    for mode, folder in originals.items():
        tmp = tmp_path_factory.mktemp(f"replay-{mode}")
        copy = _copy(folder, tmp / "archive")
        _name_real_endpoints(copy)
        planted = "sk-planted-" + secrets.token_urlsafe(24)
        out = _replay(str(copy), "--output-dir", str(tmp / "replays"), "--compare",
                      env={**os.environ, "MISTRAL_API_KEY": planted, "SLACK_BOT_TOKEN": planted})
        found = [p for p in (tmp / "replays").iterdir() if not p.name.startswith(".")] \
            if (tmp / "replays").exists() else []
        done[mode] = (copy, found, out, planted)
    return done


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_replay_rebuilds_the_incident_and_compares_same(replayed, mode):
    copy, found, out, planted = replayed[mode]
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "result: same (8 fact(s) compared, 0 differ)" in out.stdout, out.stdout
    [folder] = found
    index = json.loads((folder / "incident.json").read_text())
    original = json.loads((copy / "incident.json").read_text())
    assert index["replay_of"] == original["id"] == f"INC-{mode}"
    assert index["replay"]["fault"]["mode"] == mode  # what the original's stack really played
    assert (index["error_class"], index["notebooks"][-1]["name"]) == EXPECTED[mode]
    assert index["severity"] == original["severity"]
    # the real endpoints named by the original were replaced, and the record says so
    replaced = index["replay"]["parameters"]["replaced"]
    assert sorted(index["replay"]["parameters"]["real_endpoints_replaced"]) == \
        ["mistral_url", "prometheus_url", "service_health_url"]
    assert replaced["mistral_url"]["was"] == REAL["mistral_url"] and replaced["kubeconfig"]["was"] == REAL["kubeconfig"]
    for name in ("mistral_url", "prometheus_url", "service_health_url"):
        assert f"{name}: {REAL[name]} replaced by the stack's" in out.stdout
    # every run's recorded parameters reach loopback only
    urls = []
    for run in sorted(folder.glob("*.run.json")):
        recorded = json.loads(run.read_text())["parameters"]
        urls += [v for v in recorded.values() if isinstance(v, str) and "://" in v]
        assert recorded.get("prometheus_url", "") == ""
    assert len(urls) >= 4, urls  # triage's and the diagnosis' mistral_url and service_health_url at least
    assert {urlsplit(u).hostname for u in urls} == {"127.0.0.1"}, urls
    # the planted key is nowhere in the replay; triage probed with another (throwaway) key
    for path in folder.rglob("*"):
        if path.is_file():
            assert planted not in path.read_text(errors="replace"), path
    assert "SLACK_BOT_TOKEN" in index["replay"]["environment"]["removed"]
    orig_key = read_records(copy / "triage.ipynb")["api_key"]["fingerprint"]
    assert read_records(folder / "triage.ipynb")["api_key"]["fingerprint"] != orig_key


def test_an_altered_verdict_class_is_reported_and_exits_1(originals, replayed, tmp_path):
    copy = _copy(originals["rate_limited"], tmp_path / "archive")
    [replay] = replayed["rate_limited"][1]  # its replay, compared again (--against) with the altered copy
    # the copy's triage now says it saw an auth failure (its probes still say 429)
    nb = json.loads((copy / "triage.ipynb").read_text())
    changed = 0
    for cell in nb["cells"]:
        for output in cell.get("outputs") or []:
            payload = (output.get("data") or {}).get(MIME)
            if isinstance(payload, dict) and payload.get("name") == "verdict":
                payload["value"].update(label="auth failure", api_verdict="auth_failure")
                changed += 1
    assert changed == 1
    (copy / "triage.ipynb").write_text(json.dumps(nb))
    out = _replay(str(copy), "--compare", "--against", str(replay))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("triage verdict class") and "auth failure" in line and "rate limited" in line
               and line.endswith("DIFFERS") for line in lines), out.stdout
    assert any(line.startswith("error class") and line.endswith("same") for line in lines), out.stdout
    assert "result: DIFFERENT: 2 fact(s) differ: API verdict (triage's probes), triage verdict class" in out.stdout
    assert "tolerance: each fact is compared exactly" in out.stdout


def test_a_folder_a_replay_cannot_use_is_refused_naming_what_is_missing(originals, tmp_path):
    from runbook_lib.sim.replay.source import read

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ParameterError, match="'INCIDENT'.*incident folder \\(with incident.json\\)"):
        read(empty)
    no_records = tmp_path / "no-records"
    no_records.mkdir()
    shutil.copy(originals["rate_limited"] / "incident.json", no_records)
    with pytest.raises(ParameterError, match="'INCIDENT'.*has none .*cannot tell which fault to inject"):
        read(no_records)
    # triage ran but its probes' record is gone
    no_probes = _copy(originals["rate_limited"], tmp_path / "no-probes")
    nb = json.loads((no_probes / "triage.ipynb").read_text())
    for cell in nb["cells"]:
        cell["outputs"] = [o for o in cell.get("outputs") or []
                           if ((o.get("data") or {}).get(MIME) or {}).get("name") != "mistral_api"]
    (no_probes / "triage.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ParameterError, match="no 'mistral_api' record.*cannot rebuild the incident"):
        read(no_probes)
    # probes of a class no simulator mode plays (a DNS failure): refused by name, not replayed as another
    from runbook_lib.sim.replay.fault import plan

    original = read(originals["auth_failure"])
    original.triage["mistral_api"]["verdict"] = "dns_failure"
    with pytest.raises(ParameterError, match="'INCIDENT'.*probes say 'dns_failure'.*which no simulator mode"):
        plan(original)
    # the CLI: exit 2, the message names INCIDENT and the missing record, nothing written
    out = _replay(str(no_records), "--output-dir", str(tmp_path / "replays"), "--compare")
    assert out.returncode == 2 and "parameter 'INCIDENT'" in out.stderr and "triage" in out.stderr, out.stderr
    assert not (tmp_path / "replays").exists()


def test_a_parameter_outside_the_stack_is_refused_or_dropped(originals, api_key):
    from runbook_lib.sim.replay.engine import build_parameters, check_on_stack
    from runbook_lib.sim.replay.source import read
    from runbook_lib.sim.stack import EmbeddedStack

    original = read(originals["auth_failure"])
    original.parameters["secret_store"] = "vault+https://vault.example.com:8200/secret/mistral#key"
    with EmbeddedStack(api_key=api_key) as st:
        built, changed = build_parameters(original, st, kubeconfig="/tmp/kc", incident_id="R-1", max_wait_s=30)
        check_on_stack(built, st)  # everything built points at the stack
        assert built["mistral_url"] == st.mistral_url and built["secret_store"] == ""
        assert changed["replaced"]["secret_store"]["was"] == "vault+https://vault.example.com:8200/secret/mistral"
        # the replayed fault never clears: the recovery watch is capped even where the original left its default
        assert "monitor_max_s" not in original.parameters and built["monitor_max_s"] == 30
        assert built["apply_changes"] is False and built["operator"] == "runbook replay"
        with pytest.raises(ParameterError, match="'mistral_url'.*never reaches a real endpoint"):
            check_on_stack({**built, "mistral_url": "https://api.mistral.ai"}, st)
        with pytest.raises(ParameterError, match="'status_feed_url'"):
            check_on_stack({**built, "status_feed_url": "http://127.0.0.1:1/feed.rss"}, st)  # loopback, not ours


def test_the_bundles_pod_logs_are_checked_against_the_probes(replayed):
    copy, [folder], out, _ = replayed["rate_limited"]
    assert list(copy.glob("evidence-*/logs/pods.jsonl"))  # the original has its evidence bundle
    logs = json.loads((folder / "incident.json").read_text())["replay"]["logs"]
    assert logs["errors"] > 0 and logs["dominant"] == "rate_limited" and logs["agree_with_probes"] is True, logs
    assert "pod logs" not in out.stderr  # not reported missing


def test_a_bundle_alone_is_replayable_and_compares_the_same(replayed, tmp_path):
    from runbook_lib.sim.replay.fault import plan
    from runbook_lib.sim.replay.source import read

    copy, [replay], _, _ = replayed["rate_limited"]
    [archive] = copy.glob("evidence-*.tar.gz")
    alone = Path(shutil.copy(archive, tmp_path / archive.name))  # no incident folder beside it
    original = read(alone)
    assert original.folder is None and original.id == "INC-rate_limited"
    assert plan(original).mode == "rate_limited"
    assert "triage's 'parameters' record" in original.parameters_from  # no run.json in a bundle
    out = _replay(str(alone), "--compare", "--against", str(replay))
    assert out.returncode == 0 and "result: same (8 fact(s) compared, 0 differ)" in out.stdout, out.stdout + out.stderr


def test_strict_refuses_a_bundle_lacking_a_source_naming_what_cannot_be_checked(originals, tmp_path):
    """rate_limited's bundle has no metrics (no Prometheus when it was collected); auth_failure has no bundle."""
    for mode, lacking in (("rate_limited", "metrics exports"), ("auth_failure", "evidence bundle")):
        out = _replay(str(originals[mode]), "--output-dir", str(tmp_path / "replays"), "--compare", "--strict")
        assert out.returncode == 2, out.stdout + out.stderr
        assert "parameter 'INCIDENT'" in out.stderr and lacking in out.stderr, out.stderr
        assert "impact window and counts, TTD/TTM/TTR are not compared" in out.stderr, out.stderr
    assert not (tmp_path / "replays").exists()


def test_the_originals_alert_notifications_are_carried_over_shifted():
    """An incident `runbook serve` opened: its notifications move with the series, so TTD is measured from them."""
    from runbook_lib.sim.replay.engine import _shifted_alerts

    alerts = [{"name": "MistralErrorRateHigh", "status": "firing", "starts_at": "2026-12-05T14:00:00Z",
               "ends_at": "0001-01-01T00:00:00Z", "received_at": "2026-12-05T14:00:02Z", "fingerprint": "ab"},
              {"name": "MistralErrorRateHigh", "status": "resolved", "starts_at": "2026-12-05T14:00:00Z",
               "ends_at": "2026-12-05T14:05:00Z", "received_at": "2026-12-05T14:05:01Z"}, "not an alert"]
    moved = _shifted_alerts(alerts, 3600.0)
    assert [a["starts_at"] for a in moved] == ["2026-12-05T15:00:00Z", "2026-12-05T15:00:00Z"]
    assert moved[0]["ends_at"] == "0001-01-01T00:00:00Z"  # Alertmanager's "still firing" is kept as such
    assert moved[1]["ends_at"] == "2026-12-05T15:05:00Z" and moved[0]["received_at"] == "2026-12-05T15:00:02Z"
    assert moved[0]["fingerprint"] == "ab" and alerts[0]["starts_at"] == "2026-12-05T14:00:00Z"  # a copy
