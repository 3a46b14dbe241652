"""Evidence collection (the seed's collect-evidence.sh, made safe and complete) into a bundle.

For a time window: every log line of every pod of the selector (previous containers too), events
sorted by time, Prometheus range exports of the Mistral metrics (step chosen from the window), the
deployment and its revision history with secrets redacted, and the results recorded by the
incident's notebooks. A source that cannot be read is listed as missing with its reason; collection
goes on. Everything passes through `redact` on its way into the bundle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import bundle, params
from .record import read_records

RANGE_QUERIES = {
    "requests_rate_by_model_code": "sum by (model, code) (rate(mistral_requests_total[1m]))",
    "errors_rate_by_model_code": "sum by (model, code) (rate(mistral_errors_total[1m]))",
    "latency_p95_s": "histogram_quantile(0.95, sum by (le) (rate(mistral_request_duration_seconds_bucket[1m])))",
}


def step_for(window_s: float) -> float:
    """About 250 points over the window, never finer than 15 s (the usual scrape interval)."""
    return max(15.0, round(window_s / 250))


def collect(out_dir: str | Path, name: str, *, start: float, end: float, kubeconfig: str = "", context: str = "",
            namespace: str = "default", selector: str = "app=mistral-service", deployment: str = "mistral-service",
            prometheus_url: str = "", incident_folder: str | Path | None = None, secrets: list[str] | None = None,
            timeout_s: float = 10.0) -> dict[str, Any]:
    """Collect everything into `out_dir/name` (+ `.tar.gz`); returns the manifest."""
    if end <= start:
        raise params.ParameterError("window", f"{start}..{end}", "an end after the start")
    window = {"start": _iso(start), "end": _iso(end), "seconds": round(end - start)}
    with bundle.BundleWriter(out_dir, name, secrets=secrets, window=window) as b:
        _cluster(b, start, end, kubeconfig, context, namespace, selector, deployment, timeout_s)
        _metrics(b, start, end, prometheus_url, timeout_s)
        _records(b, incident_folder)
    return b.manifest()


def _cluster(b: bundle.BundleWriter, start: float, end: float, kubeconfig: str, context: str, namespace: str,
             selector: str, deployment: str, timeout_s: float) -> None:
    from . import kube

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
        }
        for path, (what, read) in reads.items():
            result = read()
            if not result.ok:
                b.add_missing(what, result.kubectl, result.finding.message)  # type: ignore[union-attr]
            elif path.endswith(".jsonl"):
                import json

                lines = [json.dumps(e, sort_keys=True) for e in result.data["lines"]]
                b.add_text(path, "\n".join(lines) + ("\n" if lines else ""), what=what, source=result.kubectl)
            else:
                b.add_json(path, result.data, what=what, source=result.kubectl)


def _metrics(b: bundle.BundleWriter, start: float, end: float, prometheus_url: str, timeout_s: float) -> None:
    if not prometheus_url:
        b.add_missing("metrics", "prometheus_url", "not configured")
        return
    from . import metrics
    from .errors import RunbookError

    step = step_for(end - start)
    for name, query in RANGE_QUERIES.items():
        try:
            frame = metrics.range_query(prometheus_url, query, start, end, step, timeout_s)
        except RunbookError as exc:
            b.add_missing(f"metrics {name}", f"{prometheus_url} query_range {query}", str(exc))
            continue
        b.add_text(f"metrics/{name}.csv", frame.to_csv(index=False), what=f"{name} (step {step:g} s)",
                   source=f"{prometheus_url}/api/v1/query_range?query={query}")


def _records(b: bundle.BundleWriter, incident_folder: str | Path | None) -> None:
    if incident_folder is None:
        return
    notebooks = sorted(Path(incident_folder).glob("*.ipynb"))
    if not notebooks:
        b.add_missing("recorded results", str(incident_folder), "no executed notebook in the incident folder")
    for nb in notebooks:
        b.add_json(f"records/{nb.stem}.json", read_records(nb), what=f"results recorded by {nb.name}",
                   source=str(nb))


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
