"""An intermittent Mistral fault that triage's probes missed is routed by the code our calls got.

Ground truth: the service simulator's own call history (what each of its calls to Mistral got).
CI once routed a 50% 503/429 fault to "our service" because the five probes all passed and the
service's last call happened to be a 200.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from runbook_lib import record
from runbook_lib.analysis import decision
from runbook_lib.runbooks import triage
from runbook_lib.sim.stack import EmbeddedStack

KEY = "sk-intermittent-" + "z" * 24


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("INTERMITTENT_KEY", KEY)
    with EmbeddedStack(api_key=KEY, mode="flaky", rate=20.0, fail_fraction=0.5, window=20) as s:
        yield s


def _frozen_window_ending_in_a_success(stack: EmbeddedStack, deadline_s: float = 30) -> list[Any]:
    """Run the flaky load until the service's last call succeeded after some failures, then pause it.

    The load is paused so the health window cannot change under the test; the simulator is set to
    "ok" so the probes pass as they did by chance in CI.
    """
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        time.sleep(0.3)
        stack.service.set_rate(0)
        time.sleep(0.3)  # calls in flight finish
        window = list(stack.service.call_history())[-stack.service.window:]
        if window and window[-1].code.startswith("2") and any(c.error for c in window):
            stack.set_mode("ok")
            return window
        stack.service.set_rate(20.0)
    raise AssertionError("the flaky load never ended its window on a success after a failure")


def test_probes_pass_our_calls_fail_half_the_time_routed_by_their_code(stack: EmbeddedStack) -> None:
    window = _frozen_window_ending_in_a_success(stack)
    last_failed = [c for c in window if c.error][-1]
    record.LOCAL.clear()
    run = triage.start(mistral_url=stack.mistral_url, api_key_env="INTERMITTENT_KEY",
                       service_health_url=stack.service_health_url, timeout_s=4.0, samples=5,
                       incident_id="intermittent")
    run.collect()
    assert run.api["verdict"] == "ok", "the probes were meant to pass (the simulator is in mode ok)"
    health = run.service["mistral"]
    assert str(health["last_status"]).startswith("2") and health["error_rate"] > 0
    dec = decision.decide(run.api, run.service)
    truth = {"503": decision.PROVIDER, "429": decision.RATE_LIMIT}[last_failed.code]
    assert dec.branch == truth, (dec, [(c.code, c.error) for c in window])
    assert last_failed.code in dec.reason and "last failed call" in dec.reason
