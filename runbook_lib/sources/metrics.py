"""Prometheus HTTP API queries (httpx), bounded, with "no data" and "error" kept distinct from 0.

A PromQL error or an empty result must never read as "0 errors/s": that is how an incident
hides behind a broken dashboard. `Prometheus` carries how to reach a real server (bearer token
from a file, basic auth with the password from an env var, CA bundle, client certificate, extra
headers) and the label matchers that scope every `mistral_*` series to our service; a credential
that is missing or refused makes the section "unavailable" with the parameter named, never a crash,
and no secret ever enters a result, an error text or a record.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import SourceUnavailable

OK, EMPTY, ERROR, UNAVAILABLE = "ok", "empty", "error", "unavailable"

# The notebook parameters that say how to reach Prometheus, besides `prometheus_url`.
ACCESS_PARAMETERS = ("prometheus_bearer_token_file", "prometheus_username", "prometheus_password_env",
                     "prometheus_ca_bundle", "prometheus_client_cert", "prometheus_client_key",
                     "prometheus_headers", "metrics_selector")
_SERIES = re.compile(r"\b(mistral_[A-Za-z0-9_]+)(\{([^}]*)\})?")


class PrometheusAccessError(SourceUnavailable):
    """A credential or TLS parameter cannot be used (file missing, env var unset): names the parameter."""


@dataclass(frozen=True)
class Prometheus:
    """Where Prometheus is and how to reach it; holds file paths and env var NAMES, never a secret."""

    url: str
    bearer_token_file: str = ""
    username: str = ""
    password_env: str = ""
    ca_bundle: str = ""
    client_cert: str = ""
    client_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    selector: str = ""  # label matchers without braces, e.g. namespace="prod",service="api"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Prometheus:
        """From a runbook's validated parameters (`params.prometheus_access` checked them)."""
        return cls(url=cfg.get("prometheus_url") or "",
                   bearer_token_file=cfg.get("prometheus_bearer_token_file") or "",
                   username=cfg.get("prometheus_username") or "",
                   password_env=cfg.get("prometheus_password_env") or "",
                   ca_bundle=cfg.get("prometheus_ca_bundle") or "",
                   client_cert=cfg.get("prometheus_client_cert") or "",
                   client_key=cfg.get("prometheus_client_key") or "",
                   headers=tuple(cfg.get("prometheus_headers") or ()),
                   selector=cfg.get("metrics_selector") or "")

    @property
    def auth_mode(self) -> str:
        return "bearer token" if self.bearer_token_file else "basic auth" if self.username else "none"

    def scoped(self, query: str) -> str:
        """`query` with the selector's matchers added to every `mistral_*` series it reads."""
        return scope_query(query, self.selector)

    def client_options(self, timeout_s: float) -> dict[str, Any]:
        """httpx client keyword arguments; PrometheusAccessError names the parameter that cannot be used.

        Environment proxies (`HTTPS_PROXY`, `NO_PROXY`) and `SSL_CERT_FILE` are honoured as httpx does.
        """
        from .tls import TlsSetupError, ssl_context

        headers = {name: value for name, value in self.headers}
        auth: httpx.Auth | None = None
        if self.bearer_token_file:
            headers["Authorization"] = f"Bearer {_token_from_file(self.bearer_token_file)}"
        elif self.username:
            password = os.environ.get(self.password_env, "") if self.password_env else ""
            if self.password_env and not password:
                raise PrometheusAccessError(f"prometheus_password_env: ${self.password_env} is not set "
                                            "(it must hold the Prometheus password)")
            auth = httpx.BasicAuth(self.username, password)
        try:
            verify = ssl_context(ca_bundle=self.ca_bundle, client_cert=self.client_cert, client_key=self.client_key,
                                 names=("prometheus_ca_bundle", "prometheus_client_cert", "prometheus_client_key"))
        except TlsSetupError as exc:
            raise PrometheusAccessError(str(exc)) from None
        return {"timeout": timeout_s, "headers": headers, "auth": auth, "verify": verify, "follow_redirects": False}

    def refused(self, status: int) -> str:
        """What a 401/403 from Prometheus means, naming the parameters to check (never their secrets)."""
        if self.bearer_token_file:
            what = f"the bearer token in {self.bearer_token_file} (prometheus_bearer_token_file)"
        elif self.username:
            what = (f"prometheus_username {self.username!r} and the password in "
                    f"${self.password_env or '<none>'} (prometheus_password_env)")
        else:
            what = ("no credentials were sent: set prometheus_bearer_token_file, or prometheus_username and "
                    "prometheus_password_env")
        return f"Prometheus refused the request (HTTP {status}): check {what}"

    def transport_problem(self, exc: BaseException) -> str:
        """A connection failure in words; TLS failures name the CA or certificate parameter."""
        from .tls import describe_tls_error

        tls = describe_tls_error(exc, ca_name="prometheus_ca_bundle", cert_name="prometheus_client_cert")
        return f"Prometheus unreachable at {self.url}: " + (tls or type(exc).__name__)


def as_prometheus(target: str | Prometheus) -> Prometheus:
    """A plain URL is a Prometheus with no credentials and no selector."""
    return target if isinstance(target, Prometheus) else Prometheus(url=target)


def scope_query(query: str, selector: str) -> str:
    """Add `selector`'s matchers to every `mistral_*` series selector in `query` (ours only).

    `rate(mistral_errors_total[5m])` with `namespace="prod"` becomes
    `rate(mistral_errors_total{namespace="prod"}[5m])`; existing matchers are kept.
    """
    if not selector:
        return query

    def add(match: re.Match[str]) -> str:
        existing = (match.group(3) or "").strip().rstrip(",")
        if existing == selector or existing.startswith(selector + ","):  # already scoped: idempotent
            return match.group(0)
        return f"{match.group(1)}{{{selector}{',' + existing if existing else ''}}}"

    return _SERIES.sub(add, query)


def _token_from_file(path: str) -> str:
    p = Path(path).expanduser()
    try:
        token = p.read_text("utf-8").strip()
    except OSError as exc:
        raise PrometheusAccessError(f"prometheus_bearer_token_file: cannot read {path} "
                                    f"({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise PrometheusAccessError(f"prometheus_bearer_token_file: {path} is not a text token") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise PrometheusAccessError(f"prometheus_bearer_token_file: {path} does not hold a single-line token")
    return token


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


async def instant(client: httpx.AsyncClient, target: str | Prometheus, query: str,
                  timeout_s: float) -> QueryResult:
    """`GET /api/v1/query` (scoped by the target's selector): one entry per series, NaN becomes None.

    `client` must come from `target.client_options` when the target needs credentials.
    """
    prom = as_prometheus(target)
    query = prom.scoped(query)
    try:
        response = await asyncio.wait_for(
            client.get(f"{prom.url}/api/v1/query", params={"query": query}, timeout=timeout_s), timeout_s)
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        return QueryResult(query, UNAVAILABLE, error=prom.transport_problem(exc))
    if response.status_code in (401, 403):
        return QueryResult(query, UNAVAILABLE, error=prom.refused(response.status_code))
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


def triage_queries(window: str) -> dict[str, str]:  # scoped by `instant`, per target
    """The seed's step 3 query plus the error ratio and p95 latency from the service's histogram."""
    return {
        "errors_per_model": f"sum by (model) (rate(mistral_errors_total[{window}]))",
        "requests_per_model": f"sum by (model) (rate(mistral_requests_total[{window}]))",
        # which code our failing calls get: picks the branch when the on-call probes all pass
        "errors_per_code": f"sum by (code) (rate(mistral_errors_total[{window}]))",
        # Counters with labels appear only once incremented: while requests flow and no error has
        # ever been counted, the error rate is a true 0 (`or vector(0)`); with no requests at all
        # the ratio stays empty, i.e. "no data".
        "error_ratio": (f"(sum(rate(mistral_errors_total[{window}])) or vector(0)) "
                        f"/ sum(rate(mistral_requests_total[{window}]))"),
        "p95_latency_s": ("histogram_quantile(0.95, sum by (le) "
                          f"(rate(mistral_request_duration_seconds_bucket[{window}])))"),
    }


async def triage_metrics(target: str | Prometheus, window: str, timeout_s: float) -> dict[str, QueryResult]:
    """All step-3 queries concurrently over one client of their own (Prometheus's credentials), each bounded."""
    prom = as_prometheus(target)
    queries = triage_queries(window)
    try:
        options = prom.client_options(timeout_s)
    except PrometheusAccessError as exc:
        return {name: QueryResult(prom.scoped(q), UNAVAILABLE, error=str(exc)) for name, q in queries.items()}
    async with httpx.AsyncClient(**options) as client:
        results = await asyncio.gather(*(instant(client, prom, q, timeout_s) for q in queries.values()))
    return dict(zip(queries, results, strict=True))


def _get(prom: Prometheus, path: str, params: dict[str, Any], timeout_s: float) -> httpx.Response:
    """One bounded GET with the target's credentials; SourceUnavailable (parameter named) on 401/403."""
    options = prom.client_options(timeout_s)  # PrometheusAccessError is a SourceUnavailable
    try:
        with httpx.Client(**options) as client:
            response = client.get(f"{prom.url}{path}", params=params)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(prom.transport_problem(exc)) from None
    if response.status_code in (401, 403):
        raise SourceUnavailable(prom.refused(response.status_code))
    return response


def range_query(target: str | Prometheus, query: str, start: float, end: float, step_s: float,
                timeout_s: float) -> Any:
    """`GET /api/v1/query_range` (scoped by the target's selector) as a long DataFrame.

    Columns: time, value, one per label. Raises SourceUnavailable when Prometheus cannot be
    reached or refuses our credentials, RunbookError on a PromQL error; an empty result is an empty
    DataFrame with the columns, never zeros.
    """
    import pandas as pd

    from ..errors import RunbookError

    prom = as_prometheus(target)
    query = prom.scoped(query)
    response = _get(prom, "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step_s},
                    timeout_s)
    try:
        body = response.json()
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


def instant_sync(target: str | Prometheus, query: str, timeout_s: float) -> QueryResult:
    """Blocking form of `instant` for code outside an event loop (its own client, the target's credentials)."""
    from .._async import run_sync

    prom = as_prometheus(target)
    try:
        options = prom.client_options(timeout_s)
    except PrometheusAccessError as exc:
        return QueryResult(prom.scoped(query), UNAVAILABLE, error=str(exc))

    async def go() -> QueryResult:
        async with httpx.AsyncClient(**options) as client:
            return await instant(client, prom, query, timeout_s)

    return run_sync(go())


def scrape_interval(target: str | Prometheus, timeout_s: float) -> float:
    """The server's global scrape interval in seconds (15 when it does not say), from its own config.

    Doubles as a bounded reachability (and credentials) check before a batch of range queries.
    """
    from ..errors import RunbookError

    prom = as_prometheus(target)
    try:
        body = _get(prom, "/api/v1/status/config", {}, timeout_s).json()
    except ValueError as exc:
        raise RunbookError(f"{prom.url} answered without JSON: is it Prometheus?") from exc
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
