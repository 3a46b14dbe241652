"""The Mistral API simulator and our service, wired together in this process's threads.

Why: the demo, `runbook stack`, `runbook lab` and the integration tests all need the same pair
(service calling the simulator with the on-call key), started in milliseconds and torn down within
a bound whatever state the fault left them in.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Self

from ._http import wait_until
from .mistral import MistralSimulator
from .service import ServiceSimulator

_MISTRAL_OPTS = frozenset({"status", "latency_s", "fail_fraction", "req_per_minute", "tokens_per_minute", "seed"})
_SERVICE_OPTS = frozenset({"models", "timeout_s", "max_concurrency", "window"})


class EmbeddedStack:
    """`MistralSimulator` + `ServiceSimulator(mistral_url, api_key)`; a context manager.

    `mode_opts` go to the simulator (`status`, `latency_s`, `fail_fraction`, `req_per_minute`,
    `tokens_per_minute`, `seed`) or to the service (`models`, `timeout_s`, `max_concurrency`,
    `window`). Unless given, `req_per_minute` is raised above the real default (720) when the
    background load alone would exhaust it, so mode "ok" stays ok however long the stack runs.
    """

    def __init__(self, api_key: str, mode: str = "ok", mistral_port: int = 0, service_port: int = 0,
                 rate: float = 5.0, log_path: str | None = None, **mode_opts: Any) -> None:
        unknown = set(mode_opts) - _MISTRAL_OPTS - _SERVICE_OPTS
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; accepted: {sorted(_MISTRAL_OPTS | _SERVICE_OPTS)}")
        sim_opts = {k: v for k, v in mode_opts.items() if k in _MISTRAL_OPTS}
        svc_opts = {k: v for k, v in mode_opts.items() if k in _SERVICE_OPTS}
        sim_opts.setdefault("req_per_minute", max(720, math.ceil(rate * 60 * 2) + 600))
        self.mistral = MistralSimulator(port=mistral_port, api_keys=[api_key], mode=mode, **sim_opts)
        self.service = ServiceSimulator("http://127.0.0.1:0", api_key, port=service_port, rate=rate,
                                        log_path=log_path, **svc_opts)
        # Ground truth: when each fault began (epoch seconds), as the tests' reference for findings.
        self._fault_lock = threading.Lock()
        self.fault_log: list[dict[str, Any]] = [{"at": time.time(), "mode": mode}]
        self.refusing = False

    def start(self) -> Self:
        """Start the simulator, then the service pointed at its real port."""
        self.mistral.start()
        try:
            self.service.mistral_url = self.mistral.url
            self.service.start()
        except BaseException:
            self.mistral.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both, bounded: the load first, then the simulator (releasing hangs), then the service."""
        self.service.stop_load()
        try:
            self.mistral.stop()
        finally:
            self.service.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def mistral_url(self) -> str:
        return self.mistral.url

    @property
    def service_health_url(self) -> str:
        return self.service.health_url

    def set_mode(self, mode: str, **opts: Any) -> None:
        """Switch the simulator's fault (`status`, `latency_s`, `fail_fraction` as options).

        Leaving the `refused` state starts the simulator's listener again on the same port.
        """
        with self._fault_lock:
            if self.refusing:
                self.mistral.start()
                self.refusing = False
            self.mistral.set_mode(mode, **opts)
            self.fault_log.append({"at": time.time(), "mode": mode, **opts})

    def refuse_connections(self) -> None:
        """A network fault: the API's listener closes, so every new connection is refused (TCP RST)."""
        with self._fault_lock:
            self.mistral.stop()
            self.refusing = True
            self.fault_log.append({"at": time.time(), "mode": "refused"})

    def fault_spans(self) -> list[dict[str, Any]]:
        """Ground truth: each fault as {mode, start, end} (end None while it lasts), from `fault_log`."""
        spans: list[dict[str, Any]] = []
        for entry, nxt in zip(self.fault_log, [*self.fault_log[1:], None], strict=True):
            if entry["mode"] != "ok":
                spans.append({"mode": entry["mode"], "start": entry["at"], "end": nxt["at"] if nxt else None})
        return spans

    def service_status(self) -> str:
        """Our service's current `.services.mistral.status`."""
        return str(self.service.health()["services"]["mistral"]["status"])

    def wait_for_service_status(self, expected: set[str], timeout_s: float) -> bool:
        """Wait (bounded) until our service's view of Mistral is one of `expected`."""
        return wait_until(lambda: self.service_status() in expected, timeout_s)
