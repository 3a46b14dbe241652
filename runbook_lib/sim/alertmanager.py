"""A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1 for the alert-to-record test.

Not a simulator: the genuine binary with a generated config whose one receiver is a webhook
(`runbook serve`), short group waits so a test sees notifications in seconds, clustering off,
storage in a temporary folder; started and stopped within bounds.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from ..errors import SourceUnavailable
from .prometheus import _free_port, find_binary

BINARY = "prometheus-alertmanager"
INSTALL_HINT = "install it with: apt-get install -y --no-install-recommends prometheus-alertmanager"


class LocalAlertmanager:
    """Alertmanager routing every alert to `webhook_url` (v4 payload), resolved ones too."""

    def __init__(self, webhook_url: str, *, bearer_token_file: str | Path | None = None, port: int = 0,
                 group_wait: str = "1s", group_interval: str = "1s", repeat_interval: str = "1h",
                 ready_timeout_s: float = 20.0) -> None:
        self.webhook_url = webhook_url
        self.bearer_token_file = str(bearer_token_file) if bearer_token_file else None
        self.port = port or _free_port()
        self.group_wait, self.group_interval, self.repeat_interval = group_wait, group_interval, repeat_interval
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        self._tmp = tempfile.TemporaryDirectory(prefix="runbook-am-")
        tmp = Path(self._tmp.name)
        (tmp / "alertmanager.yml").write_text(self.config_text())
        log = open(tmp / "alertmanager.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise SourceUnavailable(f"Alertmanager did not become ready in {self.ready_timeout_s:g} s: {tail}")

    def log_tail(self, chars: int = 2000) -> str:
        if self._tmp is None:
            return ""
        try:
            return (Path(self._tmp.name) / "alertmanager.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alerts(self) -> list[dict]:
        """What Alertmanager holds now (API v2), for a test's diagnostics."""
        return httpx.get(f"{self.url}/api/v2/alerts", timeout=2.0).json()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalAlertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
