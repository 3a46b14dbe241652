"""Bounded recovery monitoring: the seed's `watch -n 30 curl ...`, but with an end.

Probes the API every `interval_s` until `healthy_needed` consecutive probes succeed or
`max_duration_s` has passed, whichever comes first; each probe is itself bounded. Progress is
reported per probe so a long watch is never silent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import probes
from .._async import run_sync
from ..secrets import SecretRef

RECOVERED, GAVE_UP = "recovered", "max_duration_reached"


@dataclass
class MonitorResult:
    stopped_because: str
    consecutive_healthy: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def monitor_recovery(base_url: str, secret: SecretRef, *, interval_s: float, max_duration_s: float,
                     healthy_needed: int, timeout_s: float,
                     progress: Callable[[dict[str, Any]], None] | None = None, ca_bundle: str = "") -> MonitorResult:
    """Probe until recovered or out of time; the whole watch never exceeds max_duration_s + timeout_s."""
    return run_sync(_monitor(base_url, secret, interval_s, max_duration_s, healthy_needed, timeout_s, progress,
                             ca_bundle))


async def _monitor(base_url: str, secret: SecretRef, interval_s: float, max_duration_s: float,
                   healthy_needed: int, timeout_s: float,
                   progress: Callable[[dict[str, Any]], None] | None, ca_bundle: str = "") -> MonitorResult:
    t0 = time.monotonic()
    result = MonitorResult(GAVE_UP, 0)
    async with probes.client(timeout_s, tls=base_url.startswith("https:"), ca_bundle=ca_bundle) as client:
        while True:
            started = time.monotonic()
            r = await probes.probe_mistral(client, base_url, secret, timeout_s)
            result.consecutive_healthy = result.consecutive_healthy + 1 if r.ok else 0
            sample = {"t_s": round(started - t0, 2), "at": r.started_at, "status_code": r.status_code,
                      "classification": r.classification, "latency_ms": r.latency_ms, "healthy": r.ok,
                      "consecutive_healthy": result.consecutive_healthy}
            result.samples.append(sample)
            if progress:
                progress(sample)
            if result.consecutive_healthy >= healthy_needed:
                result.stopped_because = RECOVERED
                break
            remaining = max_duration_s - (time.monotonic() - t0)
            if remaining <= 0:
                break
            await asyncio.sleep(min(max(0.0, interval_s - (time.monotonic() - started)), remaining))
            if time.monotonic() - t0 >= max_duration_s:
                break
    result.duration_s = round(time.monotonic() - t0, 2)
    return result
