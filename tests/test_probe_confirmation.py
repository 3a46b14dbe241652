"""Triage's "API slow" is confirmed alone before it becomes a verdict, checked against the simulator's log.

The first burst of probes is timed while the other checks run in the same process (the cluster
read imports the Kubernetes client in a thread); on a loaded host that alone pushed a healthy API
over the latency threshold. A slow first burst is therefore sent again alone, and only a second
slow burst makes the verdict "slow". Ground truth: the simulator's own per-request log (when each
probe arrived, how long the simulator took to answer it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runbook_lib import record
from runbook_lib.analysis import decision
from runbook_lib.runbooks import triage
from runbook_lib.sim.stack import EmbeddedStack

KEY = "sk-confirm-" + "q" * 24
THRESHOLD_MS = 1000.0
SLOW_S = 1.5


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONFIRM_KEY", KEY)
    with EmbeddedStack(api_key=KEY, rate=2.0) as s:
        yield s


def _probes_seen(stack: EmbeddedStack, since: int) -> list[dict[str, Any]]:
    """The simulator's log of `GET /v1/models` (triage's probes; the service calls other paths)
    after the first `since` ones, in the order they were answered."""
    return [r for r in stack.mistral.requests if r["path"] == "/v1/models"][since:]


def _collect(stack: EmbeddedStack, *, then: Any = None) -> triage.Triage:
    """triage's steps 0-1 in this process; `then()` runs in a thread as the checks begin."""
    record.LOCAL.clear()
    run = triage.start(mistral_url=stack.mistral_url, api_key_env="CONFIRM_KEY",
                       service_health_url=stack.service_health_url, timeout_s=4.0, samples=5,
                       latency_threshold_ms=THRESHOLD_MS, incident_id="confirm")
    helper = threading.Thread(target=then, daemon=True) if then else None
    if helper:
        helper.start()
    run.collect()
    run.mistral_api()
    if helper:
        helper.join(5)
    return run


def test_a_healthy_api_sends_one_burst_and_no_confirmation(stack: EmbeddedStack) -> None:
    t0 = len(_probes_seen(stack, 0))
    run = _collect(stack)
    seen = _probes_seen(stack, t0)
    assert run.api["slow"] is False and run.api["confirmation"] is None
    assert len(seen) == 5, f"expected one burst of 5 probes, the simulator saw {len(seen)}"
    assert max(r["latency_ms"] for r in seen) < THRESHOLD_MS  # truth: the simulator answered fast


def test_an_api_slow_throughout_stays_slow_after_the_confirmation(stack: EmbeddedStack) -> None:
    stack.set_mode("slow", latency_s=SLOW_S)
    t0 = len(_probes_seen(stack, 0))
    run = _collect(stack)
    seen = _probes_seen(stack, t0)
    assert len(seen) == 10, f"a slow first burst is sent again: 5 + 5 probes, the simulator saw {len(seen)}"
    assert min(r["latency_ms"] for r in seen) >= SLOW_S * 1000  # truth: every answer took the fault's latency
    api = run.api
    assert api["slow"] is True and api["confirmation"]["slow"] is True
    assert api["latency_ms_median"] >= SLOW_S * 1000 and api["confirmation"]["latency_ms_median"] >= SLOW_S * 1000
    dec = decision.decide(api, run.service)
    assert dec.branch == decision.NETWORK and "slowly" in dec.reason


def test_a_first_burst_slow_then_a_fast_api_is_not_called_slow(stack: EmbeddedStack) -> None:
    """The simulator is slow for the first burst only: switched to ok while those probes wait.

    A probe's mode is fixed when it arrives, so the first five stay slow; the simulator's log
    shows whether the scenario happened as meant (else this test fails, it does not pass vacuously).
    """
    stack.set_mode("slow", latency_s=SLOW_S)
    t0 = len(_probes_seen(stack, 0))
    run = _collect(stack, then=lambda: (time.sleep(SLOW_S / 2), stack.set_mode("ok")))
    seen = _probes_seen(stack, t0)
    first, again = seen[:5], seen[5:]
    assert len(first) == 5 and len(again) == 5, f"expected 5 + 5 probes, the simulator saw {len(seen)}"
    assert min(r["latency_ms"] for r in first) >= SLOW_S * 1000       # truth: the first burst was slow
    assert max(r["latency_ms"] for r in again) < THRESHOLD_MS         # truth: the repeat was answered fast
    api = run.api
    assert api["slow"] is False
    assert api["confirmation"]["first_latency_ms_median"] >= SLOW_S * 1000
    assert api["latency_ms_median"] == api["confirmation"]["latency_ms_median"] < THRESHOLD_MS
    assert decision.decide(api, run.service).branch == decision.RESOLVED
