"""'Our service': a small app that calls the Mistral API the way a real integration does.

Why: the runbook's step 2 reads our service's `/health` (`.services.mistral`), step 3 reads
Prometheus' `mistral_errors_total`, and evidence collection reads the app logs. This simulator
produces all three from real traffic: a background load of `POST /v1/chat/completions` (bounded
concurrency, round-robin over models), a health summary over the last `window` calls, a
Prometheus exposition on its own registry, and optional JSON-lines logs that never hold the key.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter as PromCounter, Histogram, \
    generate_latest

from ._http import Answer, Request, Response, SimServer, utc_iso

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
MAX_RATE = 1000.0
TRANSPORT_CODE = "000"
HISTORY_MAX = 500_000  # finished calls kept as ground truth (~100 bytes each)  # what `curl -w %{http_code}` prints when nothing came back


@dataclass
class Call:
    """One finished call to the Mistral API."""

    ts: float
    model: str
    code: str
    latency_ms: float
    error: str | None
    correlation_id: str | None


def _reason(response: httpx.Response) -> str:
    """A short reason from an error body: its `type`, else `detail`/`message`, else the phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("type", "detail", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return response.reason_phrase or "error"


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 1)


class ServiceSimulator(SimServer):
    """Our service: background calls to `mistral_url`, with `/health`, `/metrics` and logs."""

    def __init__(self, mistral_url: str, api_key: str | None, host: str = "127.0.0.1", port: int = 0,
                 rate: float = 5.0, models: Sequence[str] = ("mistral-small-latest", "mistral-large-latest"),
                 timeout_s: float = 5.0, max_concurrency: int = 4, window: int = 20,
                 log_path: str | None = None) -> None:
        super().__init__(host, port)
        if not models:
            raise ValueError("models must not be empty")
        self.mistral_url = mistral_url.rstrip("/")
        self._api_key = api_key or None
        self._rate = self._check_rate(rate)
        self.models = tuple(models)
        self.timeout_s = float(timeout_s)
        self.max_concurrency = max(1, int(max_concurrency))
        self.window = max(1, int(window))
        self.log_path = log_path
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._calls: deque[Call] = deque(maxlen=self.window)
        # Ground truth for tests: every finished call (bounded), what the runbooks' findings are checked against.
        self._history: deque[Call] = deque(maxlen=HISTORY_MAX)
        self._by_model_code: Counter[tuple[str, str]] = Counter()
        self._sent = self._skipped = self._in_flight = 0
        self._load_stop = threading.Event()
        self._rate_changed = threading.Event()
        self._jobs: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._client: httpx.Client | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = PromCounter("mistral_requests", "Calls to the Mistral API by model and HTTP code "
                                     "(000 = no response)", ["model", "code"], registry=self.registry)
        self._errors = PromCounter("mistral_errors", "Failed calls to the Mistral API (non-2xx or transport "
                                   "error) by model and code", ["model", "code"], registry=self.registry)
        self._duration = Histogram("mistral_request_duration_seconds", "Duration of calls to the Mistral API",
                                   ["model"], buckets=DURATION_BUCKETS, registry=self.registry)

    # -- addresses ---------------------------------------------------------------------------
    @property
    def health_url(self) -> str:
        return f"{self.url}/health"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def rate(self) -> float:
        return self._rate

    @staticmethod
    def _check_rate(rate: Any) -> float:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= MAX_RATE:
            raise ValueError(f"rate must be a number of requests/s in [0, {MAX_RATE:g}], got {rate!r}")
        return float(rate)

    def set_rate(self, rate: float) -> None:
        """Change the background load (0 pauses it)."""
        self._rate = self._check_rate(rate)
        self._rate_changed.set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ServiceSimulator:
        """Serve HTTP, then start the load generator and its fixed pool of workers."""
        if self.running:
            return self
        super().start()
        self._load_stop = threading.Event()
        self._jobs = queue.Queue()
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(base_url=self.mistral_url, headers=headers, timeout=self.timeout_s,
                                    limits=httpx.Limits(max_connections=self.max_concurrency,
                                                        max_keepalive_connections=self.max_concurrency))
        self._threads = [threading.Thread(target=self._worker, name=f"svc-worker-{i}", daemon=True)
                         for i in range(self.max_concurrency)]
        self._threads.append(threading.Thread(target=self._loader, name="svc-load", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop_load(self) -> None:
        """Stop issuing calls (calls in flight finish or time out on their own)."""
        self._load_stop.set()
        self._rate_changed.set()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the load and the HTTP server; bounded by `timeout_s` even with calls hanging."""
        if not self.running:
            return
        self.stop_load()
        deadline = time.monotonic() + timeout_s
        for _ in range(self.max_concurrency):
            self._jobs.put(None)
        super().stop(timeout_s=max(0.1, deadline - time.monotonic()))
        for t in self._threads:  # daemon threads: one stuck in a hanging call ends at its timeout
            t.join(max(0.0, deadline - time.monotonic()))
        if all(not t.is_alive() for t in self._threads) and self._client is not None:
            self._client.close()
        self._threads = []

    # -- load generation ---------------------------------------------------------------------
    def _loader(self) -> None:
        """Tick at `rate`/s; hand a call to a free worker or count it as skipped (never queue)."""
        i = 0
        next_t = time.monotonic()
        while not self._load_stop.is_set():
            rate = self._rate
            if rate <= 0:
                self._rate_changed.wait(0.5)
                self._rate_changed.clear()
                next_t = time.monotonic()
                continue
            delay = next_t - time.monotonic()
            if delay > 0:
                if self._rate_changed.wait(delay):
                    self._rate_changed.clear()
                    next_t = time.monotonic()
                    continue
            if self._load_stop.is_set():
                return
            with self._lock:
                free = self._in_flight < self.max_concurrency
                if free:
                    self._in_flight += 1
                    self._sent += 1
                else:
                    self._skipped += 1
            if free:
                self._jobs.put(self.models[i % len(self.models)])
                i += 1
            next_t += 1.0 / rate
            if time.monotonic() - next_t > 1.0:  # fell behind (paused, slow host): don't burst
                next_t = time.monotonic()

    def _worker(self) -> None:
        while True:
            model = self._jobs.get()
            if model is None:
                return
            try:
                self._call(model)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _call(self, model: str) -> None:
        assert self._client is not None
        payload = {"model": model, "messages": [{"role": "user", "content": "Summarise today's support tickets."}],
                   "max_tokens": 64}
        t0 = time.monotonic()
        cid = None
        try:
            r = self._client.post("/v1/chat/completions", json=payload)
            code = str(r.status_code)
            cid = r.headers.get("mistral-correlation-id")
            error = None if 200 <= r.status_code < 300 else f"mistral request failed: {code} {_reason(r)}"
        except httpx.HTTPError as exc:
            code = TRANSPORT_CODE
            error = f"mistral request failed: {code} {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
        latency_s = time.monotonic() - t0
        if self._load_stop.is_set() and code == TRANSPORT_CODE:
            return  # our own shutdown cut the call: not an observation of the API
        self._record(Call(time.time(), model, code, round(latency_s * 1000, 1), self._redact(error), cid))

    def _redact(self, text: str | None) -> str | None:
        if text and self._api_key and self._api_key in text:
            return text.replace(self._api_key, "[REDACTED]")
        return text

    def _record(self, call: Call) -> None:
        self._requests.labels(call.model, call.code).inc()
        if call.error is not None:
            self._errors.labels(call.model, call.code).inc()
        self._duration.labels(call.model).observe(call.latency_ms / 1000)
        with self._lock:
            self._calls.append(call)
            self._history.append(call)
            self._by_model_code[(call.model, call.code)] += 1
        if self.log_path:
            line = {"ts": utc_iso(call.ts), "level": "error" if call.error else "info",
                    "msg": call.error or f"mistral request ok: {call.code}", "model": call.model,
                    "code": call.code, "latency_ms": call.latency_ms, "correlation_id": call.correlation_id}
            with self._log_lock, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    # -- views -------------------------------------------------------------------------------
    def call_history(self, since: float | None = None, until: float | None = None) -> list[Call]:
        """Every finished call (ground truth), optionally those that *ended* in [since, until) (epoch s)."""
        with self._lock:
            calls = list(self._history)
        return [c for c in calls if (since is None or c.ts >= since) and (until is None or c.ts < until)]

    def health(self) -> dict[str, Any]:
        """The `/health` body: `.services.mistral` summarises the last `window` calls."""
        with self._lock:
            calls = list(self._calls)
        n = len(calls)
        errors = [c for c in calls if c.error is not None]
        rate = len(errors) / n if n else 0.0
        status = "unknown" if n == 0 else "ok" if rate == 0 else "down" if rate == 1 else "degraded"
        return {"status": "ok" if status == "unknown" else status, "services": {"mistral": {
            "status": status, "error_rate": round(rate, 4), "requests": n,
            "last_status": calls[-1].code if calls else None,
            "last_error": errors[-1].error if errors else None,
            "last_error_status": errors[-1].code if errors else None,
            "p95_latency_ms": _p95([c.latency_ms for c in calls]),
            "checked_at": utc_iso(),
        }}}

    def stats(self) -> dict[str, Any]:
        """Load-generator counters (`GET /_sim/stats`); `by_model` matches `mistral_requests_total`."""
        with self._lock:
            by_model: dict[str, dict[str, int]] = {}
            for (model, code), n in sorted(self._by_model_code.items()):
                by_model.setdefault(model, {})[code] = n
            completed = sum(self._by_model_code.values())
            errors = sum(n for (_, code), n in self._by_model_code.items() if not code.startswith("2"))
            return {"rate": self._rate, "max_concurrency": self.max_concurrency, "sent": self._sent,
                    "completed": completed, "errors": errors, "skipped": self._skipped,
                    "in_flight": self._in_flight, "by_model": by_model}

    # -- HTTP --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Answer:
        path = request.path.rstrip("/") or "/"
        if path == "/health" and request.method == "GET":
            body = self.health()
            return Response.json(503 if body["status"] == "down" else 200, body)
        if path == "/metrics" and request.method == "GET":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == "/_sim/stats" and request.method == "GET":
            return Response.json(200, self.stats())
        if path == "/_sim/load" and request.method == "POST":
            try:
                body = request.json()
                self.set_rate(body["rate"])
            except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
                msg = exc.args[0] if isinstance(exc, ValueError) and exc.args else "body must be JSON {\"rate\": float}"
                return Response.json(400, {"error": str(msg)})
            return Response.json(200, {"rate": self._rate})
        return Response.json(404, {"detail": "Not Found"})


def cli_main(argv: list[str] | None = None) -> int:
    """`runbook service`: serve 'our service' in the foreground until SIGINT/SIGTERM."""
    from .mistral import serve_foreground

    p = argparse.ArgumentParser(prog="runbook service", description="'Our service': calls the Mistral API and "
                                "exposes /health, /metrics and JSON logs.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18081)
    p.add_argument("--mistral-url", default="http://127.0.0.1:18080")
    p.add_argument("--api-key-env", default="MISTRAL_API_KEY", help="environment variable holding the key")
    p.add_argument("--rate", type=float, default=5.0, help="background requests/s")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per Mistral call")
    p.add_argument("--log-file", default=None, help="append JSON lines here")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env) or None
    if key is None:
        print(f"{args.api_key_env} is unset: calls go out without a key", file=sys.stderr, flush=True)
    svc = ServiceSimulator(args.mistral_url, key, host=args.host, port=args.port, rate=args.rate,
                           timeout_s=args.timeout, log_path=args.log_file)
    return serve_foreground(svc, f"our service on {{url}} (health {{url}}/health, metrics {{url}}/metrics, "
                                 f"calling {svc.mistral_url})")


if __name__ == "__main__":
    raise SystemExit(cli_main())
