"""A replay plays the original's recorded API answers back (issue 20): statuses, bodies, rate-limit
headers, latencies, burst by burst in their original order (sim/mistral.py `set_script`, built by
sim/replay/fault.py from the notebooks' probe records).

Ground truth: what the original's probes recorded, and the simulator's own request log.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from runbook_lib.record import read_records
from runbook_lib.secrets import read_secret
from runbook_lib.sim.mistral import MistralSimulator
from runbook_lib.sources import probes

BIN = Path(sys.executable).parent
LIMITED = {"status": 429, "body": {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
                                   "param": None, "code": "1300"},
           "headers": {"x-ratelimit-remaining-req-minute": "0", "x-ratelimit-reset-req-minute": "17"},
           "latency_s": 0.0}
BAD_GATEWAY = {"status": 502, "body": None, "headers": {}, "latency_s": 0.0}
SLOW_OK = {"status": 200, "body": None, "headers": {}, "latency_s": 0.4}


async def _burst(url: str, n: int, key: str = "k", timeout_s: float = 3.0) -> list[probes.ProbeResult]:
    secret = read_secret("KEY", {"KEY": key})
    async with probes.client(timeout_s, tls=False) as client:
        return list(await asyncio.gather(*(probes.probe_mistral(client, url, secret, timeout_s) for _ in range(n))))


def test_the_simulator_plays_each_burst_of_probes_the_next_recorded_answers():
    key = "sim-" + secrets.token_urlsafe(24)
    with MistralSimulator(api_keys=[key]) as sim:
        sim.set_script([{"answers": [LIMITED, BAD_GATEWAY, BAD_GATEWAY]}, {"answers": [SLOW_OK]}], gap_s=0.3)
        first = asyncio.run(_burst(sim.url, 3, key))
        # our service's calls (no runbook User-Agent) get the current burst's answers, and do not use up the probes'
        other = httpx.get(f"{sim.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        time.sleep(0.6)
        second = asyncio.run(_burst(sim.url, 2, key))
        time.sleep(0.6)
        third = asyncio.run(_burst(sim.url, 1, key))  # past the last recorded burst: it repeats
    assert Counter(p.status_code for p in first) == Counter({429: 1, 502: 2}), first
    [limited] = [p for p in first if p.status_code == 429]
    assert limited.classification == "rate_limited" and "code=1300" in limited.detail, limited
    assert limited.ratelimit["x-ratelimit-reset-req-minute"] == "17"  # the recorded header, not the simulator's
    assert other.status_code in (429, 502)
    assert [p.status_code for p in second + third] == [200, 200, 200]
    assert min(p.latency_ms for p in second + third) >= 400, second + third  # the recorded latency
    modes = {r["mode"] for r in sim.requests}
    assert modes == {"recorded"}, modes


def test_a_recorded_timeout_is_a_hang_and_set_mode_ends_the_script():
    with MistralSimulator(api_keys=["k"]) as sim:
        sim.set_script([{"answers": [{"status": None, "body": None, "headers": {}, "latency_s": 0.0}]}])
        [hung] = asyncio.run(_burst(sim.url, 1, timeout_s=1.0))
        sim.set_mode("ok")
        assert sim.mode == "ok"
        with pytest.raises(ValueError, match="at least one answer"):
            sim.set_script([{"answers": []}])
    assert hung.classification == "timeout" and hung.status_code is None, hung


def _triage_answers(folder: Path) -> Counter:
    api = read_records(folder / "triage.ipynb")["mistral_api"]
    return Counter((p["status_code"], p["classification"], p["detail"] if p["status_code"] else "")
                   for p in api["probes"])


@pytest.mark.notebook
def test_a_partial_incident_replays_with_its_exact_mix(tmp_path):
    """Some calls failed, a random mix of 429 and 503 (the simulator's flaky mode): the replay's triage gets the
    same mix, so its verdict is the original's (a mode could only approximate it)."""
    from runbook_lib.run.respond import respond
    from runbook_lib.sim.kube import KubeEmulator, file_log_source
    from runbook_lib.sim.stack import EmbeddedStack

    key = "sim-" + secrets.token_urlsafe(24)
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        mp.setenv("MISTRAL_API_KEY", key)
        mp.delenv("KUBECONFIG", raising=False)
        log = f"{tmp}/service.log"
        with EmbeddedStack(api_key=key, rate=20.0, log_path=log) as st, \
                KubeEmulator(log_source=file_log_source(log), api_key=key) as kube:
            st.set_mode("flaky", fail_fraction=0.5)
            time.sleep(1.0)
            index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                             "prometheus_url": "", "kubeconfig": str(kube.write_kubeconfig(f"{tmp}/kc")),
                             "timeout_s": 2.0, "incident_id": "INC-partial", "sample_requests": 2,
                             "sample_interval_s": 0.1, "monitor_max_s": 1.0},
                            output_root=tmp_path / "originals", progress=False)
    original = Path(index["folder"])
    recorded = _triage_answers(original)
    assert sum(recorded.values()) >= 5
    out = subprocess.run([str(BIN / "runbook"), "replay", str(original), "--output-dir", str(tmp_path / "replays"),
                          "--compare", "-q"], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "MISTRAL_API_KEY": "sk-planted-" + secrets.token_urlsafe(16)})
    [replay] = [p for p in (tmp_path / "replays").iterdir() if not p.name.startswith(".")]
    assert _triage_answers(replay) == recorded, out.stdout + out.stderr[-2000:]
    fault = json.loads((replay / "incident.json").read_text())["replay"]["fault"]
    assert fault["recorded"]["answers"] >= sum(recorded.values()) and fault["approximate"] is None, fault
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    for fact in ("API verdict (triage's probes)", "triage verdict class", "routed notebook", "severity"):
        assert "same" in rows[fact], out.stdout
