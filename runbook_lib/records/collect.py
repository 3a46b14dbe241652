"""Evidence collection (the seed's collect-evidence.sh, made safe and complete) into a bundle.

For a time window: every log line of every pod of the selector (previous containers too), events
sorted by time, Prometheus range exports of the Mistral metrics (step chosen from the window), the
deployment and its revision history with secrets redacted, and the results recorded by the
incident's notebooks. A source that cannot be read is listed as missing with its reason; collection
goes on. Everything passes through `redact` on its way into the bundle. The cluster and Prometheus
are read concurrently, each read bounded by `timeout_s`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import bundle
from .. import params
from .incident import INDEX, read_index
from .._time import iso_z as iso
from ..record import iter_records

# Raw counters let the postmortem count failed requests exactly (increments between samples);
# rates and quantiles use a window of `{w}` seconds chosen from the step and the scrape interval.
RANGE_QUERIES = {
    "requests_total_by_model_code": "sum by (model, code) (mistral_requests_total)",
    "errors_total_by_model_code": "sum by (model, code) (mistral_errors_total)",
    "requests_rate_by_model_code": "sum by (model, code) (rate(mistral_requests_total[{w}s]))",
    "errors_rate_by_model_code": "sum by (model, code) (rate(mistral_errors_total[{w}s]))",
    "latency_p50_s": "histogram_quantile(0.50, sum by (le) (rate(mistral_request_duration_seconds_bucket[{w}s])))",
    "latency_p95_s": "histogram_quantile(0.95, sum by (le) (rate(mistral_request_duration_seconds_bucket[{w}s])))",
    "latency_p99_s": "histogram_quantile(0.99, sum by (le) (rate(mistral_request_duration_seconds_bucket[{w}s])))",
    "alerts_firing": 'ALERTS{{alertstate="firing"}}',
    # counters, like the request totals: the postmortem counts calls over the latency threshold from them
    "request_duration_buckets": "sum by (le) (mistral_request_duration_seconds_bucket)",
}
# Notebooks whose records are not incident findings (they read the others).
NOT_RECORDS = ("evidence", "postmortem")


def step_for(window_s: float, min_step_s: float = 15.0) -> float:
    """About 250 points over the window, never finer than the scrape interval (15 s by default)."""
    return max(float(min_step_s), round(window_s / 250))


def rate_window_for(step_s: float, scrape_interval_s: float) -> int:
    """A rate window that always holds several samples and covers the step, so no spike falls between."""
    return int(max(4 * scrape_interval_s, 2 * step_s))


def collect(out_dir: str | Path, name: str, *, start: float, end: float, kubeconfig: str = "", context: str = "",
            namespace: str = "default", selector: str = "app=mistral-service", deployment: str = "mistral-service",
            prometheus_url: str | Any = "", incident_folder: str | Path | None = None, secrets: list[str] | None = None,
            timeout_s: float = 10.0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect everything into `out_dir/name` (+ `.tar.gz`); returns the manifest.

    `progress` receives one line per source as it finishes (the notebook prints them).
    """
    if end <= start:
        raise params.ParameterError("window", f"{start}..{end}", "an end after the start")
    say = progress or (lambda _line: None)
    window = {"start": iso(start), "end": iso(end), "seconds": round(end - start)}
    with bundle.BundleWriter(out_dir, name, secrets=secrets, window=window) as b:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="evidence") as pool:
            jobs = [pool.submit(_cluster, b, start, end, kubeconfig, context, namespace, selector, deployment,
                                timeout_s, say),
                    pool.submit(_metrics, b, start, end, prometheus_url, timeout_s, say)]
            _records(b, incident_folder, say)
            for job in jobs:
                job.result()
    return b.manifest()


def _timed(say: Callable[[str], None], what: str, fn: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    out = fn()
    ok = getattr(out, "ok", True)
    say(f"{what}: {'ok' if ok else 'UNAVAILABLE'} ({time.monotonic() - t0:.1f} s)")
    return out


def _cluster(b: bundle.BundleWriter, start: float, end: float, kubeconfig: str, context: str, namespace: str,
             selector: str, deployment: str, timeout_s: float, say: Callable[[str], None]) -> None:
    from .. import kube

    since = max(1, int(time.time() - start))
    with kube.connect(kubeconfig, context, timeout_s) as cluster:
        reads = {
            "logs/pods.jsonl": ("pod logs, all containers, previous instances too",
                                lambda: cluster.error_logs(namespace, selector, since_s=since, tail=10_000,
                                                           pattern=".", previous=True)),
            "k8s/events.json": ("events, oldest first", lambda: cluster.events(namespace, limit=1000)),
            "k8s/deployment.json": ("deployment (env redacted)", lambda: cluster.deployment(namespace, deployment)),
            "k8s/revisions.json": ("revision history from ReplicaSets",
                                   lambda: cluster.revision_history(namespace, deployment)),
            "k8s/manifests.json": ("deployment and ReplicaSet objects as stored (redacted)",
                                   lambda: cluster.manifests(namespace, deployment)),
        }
        for path, (what, read) in reads.items():
            result = _timed(say, what, read)
            if not result.ok:
                b.add_missing(what, result.kubectl, result.finding.message)  # type: ignore[union-attr]
            elif path.endswith(".jsonl"):
                lines = [json.dumps(e, sort_keys=True) for e in result.data["lines"]]
                b.add_text(path, "\n".join(lines) + ("\n" if lines else ""), what=what, source=result.kubectl)
            else:
                b.add_json(path, result.data, what=what, source=result.kubectl)


def _metrics(b: bundle.BundleWriter, start: float, end: float, prometheus: Any, timeout_s: float,
             say: Callable[[str], None]) -> None:
    """Range exports; `prometheus` is a URL or a `metrics.Prometheus` (credentials, selector)."""
    from ..sources import metrics
    from ..errors import RunbookError

    prom = metrics.as_prometheus(prometheus)
    prometheus_url = prom.url
    if not prometheus_url:
        b.add_missing("metrics", "prometheus_url", "not configured")
        say("metrics: not configured (no prometheus_url)")
        return
    try:  # one bounded call first: a dead Prometheus (or refused credentials) costs one timeout, not one per query
        scrape_s = metrics.scrape_interval(prom, timeout_s)
    except RunbookError as exc:
        b.add_missing("metrics (all range exports)", f"{prometheus_url}/api/v1/status/config", str(exc))
        say(f"metrics: UNAVAILABLE ({exc})")
        return
    step = step_for(end - start, scrape_s)
    w = rate_window_for(step, scrape_s)

    def one(item: tuple[str, str]) -> None:
        name, template = item
        query = prom.scoped(template.format(w=w))
        try:
            frame = metrics.range_query(prom, query, start, end, step, timeout_s)
        except RunbookError as exc:
            b.add_missing(f"metrics {name}", f"{prometheus_url} query_range {query}", str(exc))
            return
        if "time" in frame:
            frame["time"] = frame["time"].map(lambda t: t.isoformat().replace("+00:00", "Z"))
        b.add_text(f"metrics/{name}.csv", frame.to_csv(index=False),
                   what=f"{name} (step {step:g} s, rate window {w} s, scrape {scrape_s:g} s)",
                   source=f"{prometheus_url}/api/v1/query_range?query={query}&step={step:g}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="prom-range") as pool:
        list(pool.map(one, RANGE_QUERIES.items()))
    say(f"metrics: {len(RANGE_QUERIES)} range exports, step {step:g} s ({time.monotonic() - t0:.1f} s)")


def _records(b: bundle.BundleWriter, incident_folder: str | Path | None, say: Callable[[str], None]) -> None:
    if not incident_folder:
        return
    folder = Path(incident_folder)
    index = read_index(folder)
    if index is not None:
        b.add_json(f"records/{INDEX}", index, what="the incident index", source=str(folder / INDEX))
    notebooks = [nb for nb in sorted(folder.glob("*.ipynb")) if nb.stem not in NOT_RECORDS]
    if not notebooks:
        b.add_missing("recorded results", str(folder), "no executed runbook notebook in the incident folder")
    for nb in notebooks:
        b.add_json(f"records/{nb.stem}.json", iter_records(nb), what=f"results recorded by {nb.name}, in order",
                   source=str(nb))
    say(f"recorded results: {len(notebooks)} notebook(s)")

