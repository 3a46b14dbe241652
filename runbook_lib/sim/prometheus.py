"""A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 for the demo and the tests.

Not a simulator: this runs the genuine binary with a generated config (short scrape interval,
temporary storage) scraping our simulated service, and waits until it is ready, bounded.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..errors import SourceUnavailable
from . import _daemon
from ._daemon import LocalDaemon

INSTALL_HINT = "install it with: apt-get install -y --no-install-recommends prometheus"


def find_binary(name: str = "prometheus") -> str | None:
    """PATH first, then /usr/bin (Debian's location, for environments with a trimmed PATH)."""
    return _daemon.find_binary(name)


class LocalPrometheus(LocalDaemon):
    """`prometheus` scraping `targets` every `scrape_interval`, storage in a temporary folder."""

    title, config_name, log_name = "Prometheus", "prometheus.yml", "prometheus.log"

    def __init__(self, targets: list[str], *, port: int = 0, scrape_interval: str = "1s",
                 rule_files: list[str | Path] | None = None, ready_timeout_s: float = 20.0,
                 binary: str = "prometheus", alertmanagers: list[str] | None = None) -> None:
        super().__init__(port, ready_timeout_s)
        self.binary = binary
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.rule_files = [str(Path(r).resolve()) for r in (rule_files or [])]
        self.alertmanagers = list(alertmanagers or [])  # host:port; firing alerts are sent there

    def config_text(self) -> str:
        targets = ", ".join(f'"{t}"' for t in self.targets)
        rules = "".join(f"\n  - {r}" for r in self.rule_files)
        return (f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: {self.scrape_interval}\n"
                + (f"rule_files:{rules}\n" if rules else "")
                + ("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ["
                   + ", ".join(f'"{a}"' for a in self.alertmanagers) + "]\n" if self.alertmanagers else "")
                + "scrape_configs:\n  - job_name: mistral-service\n"
                  f"    static_configs:\n      - targets: [{targets}]\n        labels: {{app: mistral-service}}\n")

    def start(self) -> LocalPrometheus:
        binary = find_binary(self.binary)
        if binary is None:
            raise SourceUnavailable(f"Prometheus is not installed; {INSTALL_HINT}")
        self._launch(binary, [
            "--config.file={tmp}/prometheus.yml", "--storage.tsdb.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
            "--web.enable-lifecycle", "--log.level=warn",
            # firing alerts are re-sent every resend-delay (default 1m); as often as rules run here
            f"--rules.alert.resend-delay={self.scrape_interval}"], "runbook-prom-")
        return self

    def wait_for_data(self, query: str = "up", timeout_s: float = 20.0) -> bool:
        """Wait (bounded) until `query` returns at least one series with a non-zero value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=2.0).json()
                if any(float(r["value"][1]) > 0 for r in body["data"]["result"]):
                    return True
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.25)
        return False
