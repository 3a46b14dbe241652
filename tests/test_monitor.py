import threading
import time

from runbook_lib.sources import monitor
from runbook_lib.secrets import read_secret
from runbook_lib.sim.mistral import MistralSimulator

KEY = read_secret("K", {"K": "monitor-test-key"})


def test_stops_after_n_consecutive_healthy_once_the_provider_recovers():
    with MistralSimulator(api_keys=["monitor-test-key"], mode="server_error", status=503) as sim:
        threading.Timer(0.5, sim.set_mode, args=("ok",)).start()
        seen = []
        res = monitor.monitor_recovery(sim.url, KEY, interval_s=0.2, max_duration_s=10, healthy_needed=3,
                                       timeout_s=1, progress=seen.append)
    assert res.stopped_because == monitor.RECOVERED and res.consecutive_healthy == 3
    assert res.samples[0]["status_code"] == 503 and [s["healthy"] for s in res.samples[-3:]] == [True] * 3
    assert seen == res.samples and res.duration_s < 5


def test_gives_up_at_max_duration_even_when_every_probe_hangs():
    with MistralSimulator(api_keys=["monitor-test-key"], mode="hang") as sim:
        t0 = time.monotonic()
        res = monitor.monitor_recovery(sim.url, KEY, interval_s=0.3, max_duration_s=1.5, healthy_needed=2,
                                       timeout_s=0.5)
        elapsed = time.monotonic() - t0
    assert res.stopped_because == monitor.GAVE_UP
    assert all(s["classification"] == "timeout" for s in res.samples)
    assert elapsed < 1.5 + 0.5 + 0.5
