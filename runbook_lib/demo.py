"""`make demo`: the embedded stack, an injected fault, a headless triage, everything cleaned up.

Each part is started with a bound and stopped in reverse order whatever happens; a part that
cannot start (Prometheus not installed) is announced and the demo goes on without it, exactly as
a real triage goes on without a dead dependency.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any

from .errors import SourceUnavailable

# What our service reports once a fault has reached it (the demo waits for it, bounded).
SERVICE_SHOWS = {"ok": {"ok"}, "slow": {"ok"}, "hang": {"down", "degraded", "ok", "unknown"},
                 "flaky": {"degraded", "down"}}


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def ensure_key(env_var: str = "MISTRAL_API_KEY") -> str:
    """The simulator needs a key: a throwaway one if the variable is unset (never printed)."""
    if not os.environ.get(env_var):
        os.environ[env_var] = "sim-" + secrets.token_urlsafe(24)
    return os.environ[env_var]


@contextlib.contextmanager
def optional_prometheus(service_url: str, enabled: bool = True, port: int = 0) -> Iterator[Any]:
    """A real Prometheus scraping our service, or None (with the reason said) when unavailable."""
    if not enabled:
        yield None
        return
    from .sim.prometheus import LocalPrometheus

    target = service_url.split("://", 1)[1]
    try:
        prom = LocalPrometheus([target], scrape_interval="1s", port=port).start()
    except SourceUnavailable as exc:
        say(f"Prometheus unavailable ({exc}); step 3 will say so and the run goes on")
        yield None
        return
    try:
        say(f"Prometheus {prom.url} scraping our service every 1 s")
        yield prom
    finally:
        prom.stop()


def run_demo(mode: str = "rate_limited", *, rate: float = 10.0, settle_s: float = 10.0,
             output_root: str = "outputs", incident_id: str | None = None, progress: bool = True,
             use_prometheus: bool = True) -> Any:
    """Start everything, inject `mode`, run triage headless, return the RunResult."""
    from .execute import run_notebook
    from .sim.stack import EmbeddedStack

    key = ensure_key()
    say(f"starting the Mistral API simulator and our service; will inject {mode!r}")
    prom_started: dict[str, float] = {}
    with EmbeddedStack(api_key=key, mode="ok", rate=rate) as stack, \
            optional_prometheus(stack.service.url, use_prometheus) as prom:
        prom_started["t"] = time.monotonic()
        stack.set_mode(mode)
        expected = SERVICE_SHOWS.get(mode, {"down", "degraded"})
        if not stack.wait_for_service_status(expected, timeout_s=settle_s):
            say(f"our service did not report {sorted(expected)} within {settle_s:g} s; running anyway")
        window = "10s"
        if prom is not None:
            # rate() under-reports until a whole window of samples exists: wait for one, bounded.
            remaining = 11.0 - (time.monotonic() - prom_started.get("t", time.monotonic()))
            if remaining > 0:
                say(f"letting Prometheus collect a full {window} window ({remaining:.0f} s)")
                time.sleep(remaining)
            query = (f"sum(rate(mistral_errors_total[{window}]))" if mode not in ("ok", "slow")
                     else f"sum(rate(mistral_requests_total[{window}]))")
            if not prom.wait_for_data(query, timeout_s=20):
                say("Prometheus has no samples of the fault yet; step 3 will show what it has")
        parameters = {"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                      "prometheus_url": prom.url if prom else "", "metrics_window": window,
                      "incident_id": incident_id or f"demo-{mode}", "operator": "make demo", "timeout_s": 3.0}
        say("running notebooks/triage.ipynb headless")
        return run_notebook("triage", parameters, output_root=output_root, progress=progress)
