"""Bounded, concurrent probes of the Mistral API and of our service's health endpoint.

Each probe has its own total deadline (not only httpx's per-phase timeouts, which a slow-drip
server can outlast), returns a typed result with a UTC timestamp and latency, and classifies what
it saw the way the seed runbook's `case $HTTP` does, with the cases the seed lumps together told
apart (timeout vs refused vs DNS, rate limit vs capacity, 403 vs 401).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .. import __version__
from .._time import iso_z
from ..secrets import SecretRef
from .tls import describe_tls_error, exception_chain, ssl_context

# Classes of a single Mistral API probe.
OK = "ok"
AUTH_FAILURE = "auth_failure"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
CAPACITY_EXCEEDED = "capacity_exceeded"
SERVER_ERROR = "server_error"
CLIENT_ERROR = "client_error"
TIMEOUT = "timeout"
CONNECTION_REFUSED = "connection_refused"
DNS_FAILURE = "dns_failure"
NETWORK_ERROR = "network_error"
UNEXPECTED = "unexpected"

NETWORK_CLASSES = frozenset({TIMEOUT, CONNECTION_REFUSED, DNS_FAILURE, NETWORK_ERROR})
RATE_CLASSES = frozenset({RATE_LIMITED, CAPACITY_EXCEEDED})

MEANING = {
    OK: "OK: API is reachable and the key is accepted",
    AUTH_FAILURE: "AUTH FAILURE: API key missing, invalid or revoked (401)",
    FORBIDDEN: "FORBIDDEN: key valid but not allowed (model tier or workspace permission, 403)",
    RATE_LIMITED: "RATE LIMITED: workspace request/token limit reached (429)",
    CAPACITY_EXCEEDED: "CAPACITY EXCEEDED: Mistral's service tier is out of capacity for the model (429)",
    SERVER_ERROR: "SERVER ERROR: Mistral service issue (5xx)",
    CLIENT_ERROR: "CLIENT ERROR: the request was rejected (4xx): check our request or base URL",
    TIMEOUT: "TIMEOUT: no answer within the deadline",
    CONNECTION_REFUSED: "NETWORK ERROR: connection refused",
    DNS_FAILURE: "NETWORK ERROR: the API host name does not resolve",
    NETWORK_ERROR: "NETWORK ERROR: cannot reach the API",
    UNEXPECTED: "UNEXPECTED: an answer the runbook does not know",
}

RATELIMIT_PREFIXES = ("x-ratelimit-", "ratelimitbysize-", "x-ratelimitbysize-")


def utc_now() -> str:
    return iso_z(timespec="milliseconds")


@dataclass
class ProbeResult:
    """One request's outcome: what was asked, when, how long it took and what it means."""

    target: str
    url: str
    started_at: str
    latency_ms: float
    classification: str
    status_code: int | None = None
    detail: str = ""
    error_type: str | None = None
    correlation_id: str | None = None
    ratelimit: dict[str, str] = field(default_factory=dict)
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.classification == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify_response(status: int, body: Any, headers: httpx.Headers | dict[str, str] | None = None) -> str:
    """Map an HTTP answer to a class; 429 bodies tell request limits from capacity."""
    if 200 <= status < 300:
        return OK
    if status == 401:
        return AUTH_FAILURE
    if status == 403:
        return FORBIDDEN
    if status == 429:
        message = str(body.get("message", "")) if isinstance(body, dict) else str(body or "")
        return CAPACITY_EXCEEDED if "capacity" in message.lower() else RATE_LIMITED
    if 500 <= status < 600:
        return SERVER_ERROR
    if 400 <= status < 500:
        return CLIENT_ERROR
    return UNEXPECTED


def classify_transport_error(exc: BaseException) -> str:
    """Tell timeouts, refused connections and DNS failures apart (curl's `000` hides which)."""
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return TIMEOUT
    text = " ".join(repr(e) for e in exception_chain(exc)).lower()
    dns_markers = ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
                   "no address associated", "getaddrinfo failed", "name resolution")
    if any(m in text for m in dns_markers):
        return DNS_FAILURE
    if "connection refused" in text or "errno 111" in text or "connect call failed" in text:
        return CONNECTION_REFUSED
    return NETWORK_ERROR


def _error_detail(body: Any) -> str:
    """A short, key-free description of an error body (its message/type/code fields only)."""
    if isinstance(body, dict):
        parts = []
        for key in ("message", "detail", "type", "code"):
            value = body.get(key)
            if value not in (None, ""):
                text = value if isinstance(value, str) else str(value)
                parts.append(f"{key}={text[:120]}")
        return ", ".join(parts)
    return ""


def _ratelimit_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(RATELIMIT_PREFIXES)}


async def probe_mistral(client: httpx.AsyncClient, base_url: str, secret: SecretRef,
                        timeout_s: float) -> ProbeResult:
    """`GET /v1/models` with the key (if present), bounded by `timeout_s` in total."""
    url = f"{base_url}/v1/models"
    headers = {"Accept": "application/json"}
    key = secret.reveal()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started_at, t0 = utc_now(), time.perf_counter()
    try:
        response = await asyncio.wait_for(client.get(url, headers=headers, timeout=timeout_s), timeout_s)
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        cls = classify_transport_error(exc)
        tls = describe_tls_error(exc, ca_name="ca_bundle", cert_name="a client certificate")
        return ProbeResult("mistral_api", url, started_at, _ms(t0), cls, None,
                           f"no HTTP answer ({type(exc).__name__})" + (f": {tls}" if tls else ""),
                           error_type=type(exc).__name__)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    cls = classify_response(response.status_code, body, response.headers)
    # What is specific to this answer; the class's meaning is MEANING[cls].
    detail = ""
    if cls == OK and isinstance(body, dict) and isinstance(body.get("data"), list):
        detail = f"{len(body['data'])} models listed"
    elif cls != OK:
        extra = _error_detail(body)
        detail = f"body: {extra}" if extra else ("empty body" if not response.content else "body not JSON")
    return ProbeResult("mistral_api", url, started_at, _ms(t0), cls, response.status_code, detail,
                       correlation_id=response.headers.get("mistral-correlation-id"),
                       ratelimit=_ratelimit_headers(response.headers),
                       retry_after=response.headers.get("retry-after"))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


@dataclass
class ApiSummary:
    """A small sample of probes, so that partial failures (flaky, some 429s) are visible."""

    verdict: str              # a probe class, or "partial" when successes and failures mix
    dominant_error: str | None
    samples: int
    counts: dict[str, int]
    error_fraction: float
    latency_ms_median: float | None
    latency_ms_max: float | None
    slow: bool
    latency_threshold_ms: float
    ratelimit: dict[str, str]
    probes: list[dict[str, Any]]
    # When the first burst looked slow while other checks shared this process, the burst sent alone
    # to confirm it (see `confirm_slow`); None when no confirmation was needed.
    confirmation: dict[str, Any] | None = None

    @property
    def all_failed(self) -> bool:
        return self.samples > 0 and self.error_fraction == 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(results: list[ProbeResult], latency_threshold_ms: float) -> ApiSummary:
    """Fold a sample into one verdict: the common class, or `partial` with its main error."""
    counts = Counter(r.classification for r in results)
    errors = [r for r in results if not r.ok]
    error_fraction = round(len(errors) / len(results), 3) if results else 1.0
    dominant = Counter(r.classification for r in errors).most_common(1)[0][0] if errors else None
    if not errors:
        verdict = OK
    elif len(errors) == len(results):
        verdict = dominant or UNEXPECTED
    else:
        verdict = "partial"
    ok_latencies = [r.latency_ms for r in results if r.ok]
    median = round(statistics.median(ok_latencies), 1) if ok_latencies else None
    ratelimit: dict[str, str] = {}
    for r in results:
        ratelimit.update(r.ratelimit)
    return ApiSummary(
        verdict=verdict, dominant_error=dominant, samples=len(results), counts=dict(counts),
        error_fraction=error_fraction, latency_ms_median=median,
        latency_ms_max=max(ok_latencies) if ok_latencies else None,
        slow=median is not None and median > latency_threshold_ms,
        latency_threshold_ms=latency_threshold_ms, ratelimit=ratelimit,
        probes=[r.to_dict() for r in results],
    )


def confirm_slow(first: ApiSummary, again: ApiSummary) -> ApiSummary:
    """`first` judged slow only if `again`, sent with nothing else running, is slow too.

    Why: triage times its probes while the cluster and metrics checks run beside them; a thread
    importing the Kubernetes client holds the GIL, and on a loaded host that stall alone exceeded
    the threshold (a healthy API called slow). The repeat measures the API, not our own start-up.
    """
    first.confirmation = {"latency_ms_median": again.latency_ms_median, "latency_ms_max": again.latency_ms_max,
                          "slow": again.slow, "samples": again.samples, "counts": again.counts,
                          "first_latency_ms_median": first.latency_ms_median}
    if again.slow or again.latency_ms_median is None:
        return first
    # The API's latency is the one measured alone; the stalled burst stays in `probes` and here.
    first.slow, first.latency_ms_median, first.latency_ms_max = False, again.latency_ms_median, again.latency_ms_max
    return first


async def sample_mistral(client: httpx.AsyncClient, base_url: str, secret: SecretRef, timeout_s: float,
                         samples: int, latency_threshold_ms: float) -> ApiSummary:
    """Send `samples` probes concurrently: one bounded burst, not a sequence of waits."""
    results = await asyncio.gather(*(probe_mistral(client, base_url, secret, timeout_s) for _ in range(samples)))
    return summarise(list(results), latency_threshold_ms)


@dataclass
class ServiceHealth:
    """Our service's `/health`, reduced to what triage needs (the seed's `.services.mistral`)."""

    url: str
    started_at: str
    latency_ms: float
    reachable: bool
    status_code: int | None
    status: str                     # ok | degraded | down | unknown | unreachable | invalid
    mistral: dict[str, Any] | None  # the `.services.mistral` object as the service reported it
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def probe_service(client: httpx.AsyncClient, health_url: str, timeout_s: float) -> ServiceHealth:
    """GET our health endpoint; a 503 with a JSON body is a valid answer ("down"), not a failure."""
    started_at, t0 = utc_now(), time.perf_counter()
    try:
        response = await asyncio.wait_for(client.get(health_url, timeout=timeout_s), timeout_s)
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        cls = classify_transport_error(exc)
        return ServiceHealth(health_url, started_at, _ms(t0), False, None, "unreachable", None,
                             f"UNREACHABLE: {MEANING[cls]} ({type(exc).__name__})")
    try:
        body = response.json()
        mistral = body["services"]["mistral"]
        if not isinstance(mistral, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return ServiceHealth(health_url, started_at, _ms(t0), True, response.status_code, "invalid", None,
                             f"HTTP {response.status_code}, but no `.services.mistral` object in the body")
    status = str(mistral.get("status", "unknown"))
    detail = f"HTTP {response.status_code}; mistral dependency: {status}"
    if mistral.get("error_rate") is not None:
        detail += f", error rate {float(mistral['error_rate']):.0%} over {mistral.get('requests', '?')} requests"
    if mistral.get("last_error"):
        detail += f", last error: {str(mistral['last_error'])[:160]}"
    return ServiceHealth(health_url, started_at, _ms(t0), True, response.status_code, status, mistral, detail)


# what the runbooks' probes call themselves: a proxy's or the API's logs can tell them from the product's calls
USER_AGENT = f"mistral-runbooks/{__version__} (incident probe)"


def client(timeout_s: float, *, tls: bool = True, ca_bundle: str = "") -> httpx.AsyncClient:
    """One client for a triage run, redirects not followed (a redirect is itself a finding).

    httpx's environment applies: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` route the probes through a
    proxy (CONNECT for https), `SSL_CERT_FILE`/`SSL_CERT_DIR` replace the CA store; `ca_bundle` (the
    runbooks' parameter, a PEM file) is trusted instead when given. `tls=False` is only for runs whose
    every target is plain http: it skips loading the CA bundle (30 ms, a fifth of a triage's own
    time); certificates are verified whenever https is used.
    """
    verify = ssl_context(ca_bundle=ca_bundle, names=("ca_bundle", "ca_bundle", "ca_bundle")) if tls else False
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, verify=verify, headers={"User-Agent": USER_AGENT})
