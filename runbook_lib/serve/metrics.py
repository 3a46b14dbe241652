"""serve's own Prometheus metrics (GET /metrics), in a registry of their own."""

from __future__ import annotations


class ServeMetrics:
    """serve's own metrics, in a registry of their own (not the process default)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.webhooks = Counter("runbook_serve_webhooks", "Webhook requests by outcome", ["outcome"], registry=r)
        self.alerts = Counter("runbook_serve_alerts", "Alerts handled by status and action",
                              ["status", "action"], registry=r)
        self.started = Counter("runbook_serve_runs_started", "respond runs started", registry=r)
        self.connections_refused = Counter("runbook_serve_connections_closed", "Connections refused over "
                                           "--max-connections or closed at the header deadline", ["reason"],
                                           registry=r)
        self.adopted = Counter("runbook_serve_runs_adopted", "respond runs found alive from a previous serve "
                               "and adopted (waited for) instead of started again", registry=r)
        self.failed = Counter("runbook_serve_runs_failed", "respond runs that failed or timed out", registry=r)
        self.queued = Gauge("runbook_serve_runs_queued", "Accepted jobs and respond runs waiting", registry=r)
        self.job_failures = Counter("runbook_serve_job_failures", "Failed attempts at handling an accepted job "
                                    "(retried with backoff)", ["stage"], registry=r)
        self.spool_jobs = Gauge("runbook_serve_spool_jobs", "Jobs in the spool (accepted, not finished)", registry=r)
        self.oldest_age = Gauge("runbook_serve_oldest_job_age_seconds", "Age of the oldest job in the spool",
                                registry=r)
        self.running = Gauge("runbook_serve_runs_running", "respond runs in progress", registry=r)
        self.duration = Histogram("runbook_serve_run_duration_seconds", "Wall time of respond runs",
                                  buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600), registry=r)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
