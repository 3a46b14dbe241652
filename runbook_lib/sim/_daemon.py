"""What the local Prometheus and Alertmanager share: a real binary started on 127.0.0.1 with a
generated config in a temporary folder, ready within a bound (`/-/ready`), stopped within a bound.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import SourceUnavailable


def find_binary(name: str) -> str | None:
    """PATH first, then /usr/bin (Debian's location, for environments with a trimmed PATH)."""
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalDaemon:
    """Base: subclasses set `title`, `config_name`, `log_name`, and call `_launch` from `start`."""

    title = "daemon"
    config_name = "config.yml"
    log_name = "daemon.log"

    def __init__(self, port: int = 0, ready_timeout_s: float = 20.0) -> None:
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        raise NotImplementedError

    def _launch(self, binary: str, args: list[str], tmp_prefix: str) -> None:
        """Write the config into a fresh temporary folder, start `binary`, wait for `/-/ready`.

        `args` may hold `{tmp}`, replaced by that folder. SourceUnavailable (with the log's tail)
        when it exits or is not ready within `ready_timeout_s`.
        """
        import httpx

        self._tmp = tempfile.TemporaryDirectory(prefix=tmp_prefix)
        tmp = Path(self._tmp.name)
        (tmp / self.config_name).write_text(self.config_text())
        with open(tmp / self.log_name, "wb") as log:
            self._proc = subprocess.Popen([binary, *(a.replace("{tmp}", str(tmp)) for a in args)],
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.log_tail(800)
        self.stop()
        raise SourceUnavailable(f"{self.title} did not become ready in {self.ready_timeout_s:g} s: {tail}")

    def log_tail(self, chars: int = 2000) -> str:
        if self._tmp is None:
            return ""
        try:
            return (Path(self._tmp.name) / self.log_name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

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

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Any:
        raise NotImplementedError
