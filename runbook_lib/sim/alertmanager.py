"""A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1 for the alert-to-record test.

Not a simulator: the genuine binary with a generated config whose one receiver is a webhook
(`runbook serve`), short group waits so a test sees notifications in seconds, clustering off,
storage in a temporary folder; started and stopped within bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ..errors import SourceUnavailable
from ._daemon import LocalDaemon, find_binary

BINARY = "prometheus-alertmanager"
INSTALL_HINT = "install it with: apt-get install -y --no-install-recommends prometheus-alertmanager"


class LocalAlertmanager(LocalDaemon):
    """Alertmanager routing every alert to `webhook_url` (v4 payload), resolved ones too."""

    title, config_name, log_name = "Alertmanager", "alertmanager.yml", "alertmanager.log"

    def __init__(self, webhook_url: str, *, bearer_token_file: str | Path | None = None, port: int = 0,
                 group_wait: str = "1s", group_interval: str = "1s", repeat_interval: str = "1h",
                 ready_timeout_s: float = 20.0) -> None:
        super().__init__(port, ready_timeout_s)
        self.webhook_url = webhook_url
        self.bearer_token_file = str(bearer_token_file) if bearer_token_file else None
        self.group_wait, self.group_interval, self.repeat_interval = group_wait, group_interval, repeat_interval

    @property
    def address(self) -> str:
        """host:port, what Prometheus's alerting config wants."""
        return f"127.0.0.1:{self.port}"

    def config_text(self) -> str:
        http_config = (f"\n    http_config:\n      authorization:\n        type: Bearer\n"
                       f"        credentials_file: {json.dumps(self.bearer_token_file)}"
                       if self.bearer_token_file else "")
        return ("route:\n  receiver: runbook-serve\n  group_by: [alertname]\n"
                f"  group_wait: {self.group_wait}\n  group_interval: {self.group_interval}\n"
                f"  repeat_interval: {self.repeat_interval}\n"
                "receivers:\n  - name: runbook-serve\n    webhook_configs:\n"
                f"      - url: {json.dumps(self.webhook_url)}\n        send_resolved: true\n        max_alerts: 0"
                + http_config.replace("\n    ", "\n        ") + "\n")

    def start(self) -> LocalAlertmanager:
        binary = find_binary(BINARY) or find_binary("alertmanager")
        if binary is None:
            raise SourceUnavailable(f"Alertmanager is not installed; {INSTALL_HINT}")
        self._launch(binary, ["--config.file={tmp}/alertmanager.yml", "--storage.path={tmp}/data",
                              f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                              "--log.level=warn"], "runbook-am-")
        return self

    def alerts(self) -> list[dict]:
        """What Alertmanager holds now (API v2), for a test's diagnostics."""
        return httpx.get(f"{self.url}/api/v2/alerts", timeout=2.0).json()
