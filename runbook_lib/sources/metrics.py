"""Prometheus HTTP API queries (httpx), bounded, with "no data" and "error" kept distinct from 0.

A PromQL error or an empty result must never read as "0 errors/s": that is how an incident
hides behind a broken dashboard.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

OK, EMPTY, ERROR, UNAVAILABLE = "ok", "empty", "error", "unavailable"


@dataclass
class QueryResult:
    query: str
    status: str                                   # ok | empty | error | unavailable
    series: list[dict[str, Any]] = field(default_factory=list)   # [{"labels": {...}, "value": float}]
    error: str | None = None

    def scalar(self) -> float | None:
        """The single value of a one-series result; None when empty/error (never 0)."""
        if self.status != OK or not self.series:
            return None
        value = self.series[0]["value"]
        return None if value is None or math.isnan(value) else value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(raw: Any) -> float | None:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


async def instant(client: httpx.AsyncClient, base_url: str, query: str, timeout_s: float) -> QueryResult:
    """`GET /api/v1/query`: a vector becomes one entry per series, NaN becomes None."""
    try:
        response = await asyncio.wait_for(
            client.get(f"{base_url}/api/v1/query", params={"query": query}, timeout=timeout_s), timeout_s)
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        return QueryResult(query, UNAVAILABLE, error=f"Prometheus unreachable: {type(exc).__name__}")
    try:
        body = response.json()
    except ValueError:
        return QueryResult(query, ERROR, error=f"HTTP {response.status_code}: not a Prometheus API answer")
    if body.get("status") != "success":
        return QueryResult(query, ERROR, error=f"{body.get('errorType', 'error')}: {body.get('error', '')}"[:300])
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        series = [{"labels": {}, "value": _value(result[1])}]
    elif kind == "vector":
        series = [{"labels": r.get("metric", {}), "value": _value(r["value"][1])} for r in result]
    else:
        return QueryResult(query, ERROR, error=f"unexpected result type {kind!r} for an instant query")
    return QueryResult(query, OK if series else EMPTY, series)


def triage_queries(window: str) -> dict[str, str]:
    """The seed's step 3 query plus the error ratio and p95 latency from the service's histogram."""
    return {
        "errors_per_model": f"sum by (model) (rate(mistral_errors_total[{window}]))",
        "requests_per_model": f"sum by (model) (rate(mistral_requests_total[{window}]))",
        # Counters with labels appear only once incremented: while requests flow and no error has
        # ever been counted, the error rate is a true 0 (`or vector(0)`); with no requests at all
        # the ratio stays empty, i.e. "no data".
        "error_ratio": (f"(sum(rate(mistral_errors_total[{window}])) or vector(0)) "
                        f"/ sum(rate(mistral_requests_total[{window}]))"),
        "p95_latency_s": ("histogram_quantile(0.95, sum by (le) "
                          f"(rate(mistral_request_duration_seconds_bucket[{window}])))"),
    }


async def triage_metrics(client: httpx.AsyncClient, base_url: str, window: str, timeout_s: float
                         ) -> dict[str, QueryResult]:
    """All step-3 queries concurrently, each bounded."""
    queries = triage_queries(window)
    results = await asyncio.gather(*(instant(client, base_url, q, timeout_s) for q in queries.values()))
    return dict(zip(queries, results, strict=True))


def range_query(base_url: str, query: str, start: float, end: float, step_s: float, timeout_s: float) -> Any:
    """`GET /api/v1/query_range` as a long DataFrame (time, value, one column per label).

    Raises SourceUnavailable when Prometheus cannot be reached and RunbookError on a PromQL
    error; an empty result is an empty DataFrame with the columns, never zeros.
    """
    import pandas as pd

    from ..errors import RunbookError, SourceUnavailable

    try:
        response = httpx.get(f"{base_url}/api/v1/query_range", timeout=timeout_s,
                             params={"query": query, "start": start, "end": end, "step": step_s})
        body = response.json()
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"Prometheus unreachable at {base_url}: {type(exc).__name__}") from exc
    except ValueError as exc:
        raise RunbookError(f"Prometheus answered HTTP {response.status_code} without JSON") from exc
    if body.get("status") != "success":
        raise RunbookError(f"PromQL error for {query!r}: {body.get('errorType')}: {body.get('error')}")
    rows = []
    for series in body["data"]["result"]:
        for ts, raw in series.get("values", []):
            rows.append({**series.get("metric", {}), "time": pd.Timestamp(float(ts), unit="s", tz="UTC"),
                         "value": _value(raw)})
    frame = pd.DataFrame(rows, columns=None if rows else ["time", "value"])
    return frame.sort_values("time", ignore_index=True) if rows else frame


def instant_sync(base_url: str, query: str, timeout_s: float) -> QueryResult:
    """Blocking form of `instant` for code outside an event loop."""
    from .._async import run_sync

    async def go() -> QueryResult:
        async with httpx.AsyncClient() as client:
            return await instant(client, base_url, query, timeout_s)

    return run_sync(go())


def scrape_interval(base_url: str, timeout_s: float) -> float:
    """The server's global scrape interval in seconds (15 when it does not say), from its own config.

    Doubles as a bounded reachability check before a batch of range queries.
    """
    from ..errors import RunbookError, SourceUnavailable

    try:
        body = httpx.get(f"{base_url}/api/v1/status/config", timeout=timeout_s).json()
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"Prometheus unreachable at {base_url}: {type(exc).__name__}") from exc
    except ValueError as exc:
        raise RunbookError(f"{base_url} answered without JSON: is it Prometheus?") from exc
    import yaml

    try:
        config = yaml.safe_load((body.get("data") or {}).get("yaml") or "") or {}
        return _seconds(str((config.get("global") or {}).get("scrape_interval") or "15s"))
    except (yaml.YAMLError, ValueError, AttributeError):
        return 15.0


def _seconds(duration: str) -> float:
    """A Prometheus duration ("1s", "15s", "1m", "1m30s", "500ms") in seconds."""
    import re

    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(duration)
    return float(sum(int(n) * units[u] for n, u in parts))
