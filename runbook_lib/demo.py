"""`make demo`: the embedded stack, an injected fault, a headless triage, everything cleaned up.

Each part is started with a bound and stopped in reverse order whatever happens; a part that
cannot start (Prometheus not installed) is announced and the demo goes on without it, exactly as
a real triage goes on without a dead dependency.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import SourceUnavailable

# What our service reports once a fault has reached it (the demo waits for it, bounded).
SERVICE_SHOWS = {"ok": {"ok"}, "slow": {"ok"}, "hang": {"down", "degraded", "ok", "unknown"},
                 "flaky": {"degraded", "down"}}


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def ensure_key(env_var: str = "MISTRAL_API_KEY") -> str:
    """The simulator needs a key: a throwaway one if the variable is unset (never printed)."""
    if not os.environ.get(env_var):
        os.environ[env_var] = "sim-" + secrets.token_urlsafe(24)
    return os.environ[env_var]


@contextlib.contextmanager
def optional_prometheus(service_url: str, enabled: bool = True, port: int = 0) -> Iterator[Any]:
    """A real Prometheus scraping our service, or None (with the reason said) when unavailable."""
    if not enabled:
        yield None
        return
    from .sim.prometheus import LocalPrometheus

    target = service_url.split("://", 1)[1]
    try:
        rules = [r for r in [RULES] if r.exists()]  # the alerts of deploy/, when run from the repository
        prom = LocalPrometheus([target], scrape_interval="1s", port=port, rule_files=rules).start()
    except SourceUnavailable as exc:
        say(f"Prometheus unavailable ({exc}); step 3 will say so and the run goes on")
        yield None
        return
    try:
        say(f"Prometheus {prom.url} scraping our service every 1 s")
        yield prom
    finally:
        prom.stop()


RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "mistral-rules.yml"

# The notebooks' default addresses: `make lab` / `runbook stack` serve the stack there.
FIXED_PORTS = {"mistral": 18080, "service": 18081, "prometheus": 19090, "kube": 18082}


@contextlib.contextmanager
def full_stack(key: str, *, mode: str = "ok", rate: float = 10.0, fixed_ports: bool = False,
               use_prometheus: bool = True) -> Iterator[tuple[Any, Any, Any]]:
    """Mistral simulator + our service (logging to a file) + cluster emulator + Prometheus if installed.

    Yields (stack, kube, prom-or-None); everything is stopped in reverse order on exit.
    """
    import tempfile

    from .sim.kube import KubeEmulator, file_log_source
    from .sim.stack import EmbeddedStack

    ports = FIXED_PORTS if fixed_ports else dict.fromkeys(FIXED_PORTS, 0)
    with tempfile.TemporaryDirectory(prefix="runbook-stack-") as tmp:
        log = f"{tmp}/service.log"
        with EmbeddedStack(api_key=key, mode=mode, rate=rate, log_path=log, mistral_port=ports["mistral"],
                           service_port=ports["service"]) as stack, \
                KubeEmulator(port=ports["kube"], log_source=file_log_source(log), api_key=key) as kube, \
                optional_prometheus(stack.service.url, use_prometheus, port=ports["prometheus"]) as prom:
            say(f"Mistral simulator {stack.mistral_url}, our service {stack.service_health_url}, "
                f"Kubernetes API emulator {kube.url}")
            yield stack, kube, prom


def run_demo(mode: str = "rate_limited", *, rate: float = 10.0, settle_s: float = 10.0,
             output_root: str = "outputs", incident_id: str | None = None, progress: bool = True,
             use_prometheus: bool = True) -> Any:
    """Start everything, inject `mode`, run triage headless, return the RunResult."""
    from pathlib import Path

    from .execute import new_record_dir, run_notebook

    key = ensure_key()
    say(f"starting the embedded stack; will inject {mode!r}")
    incident_id = incident_id or f"demo-{mode}"
    record_dir = new_record_dir(Path(output_root), incident_id)
    with full_stack(key, rate=rate, use_prometheus=use_prometheus) as (stack, kube, prom):
        started = time.monotonic()
        # Absolute: the kernel's working directory is the record folder.
        kubeconfig = kube.write_kubeconfig((record_dir / "kubeconfig-embedded.yaml").resolve())
        stack.set_mode(mode)
        expected = SERVICE_SHOWS.get(mode, {"down", "degraded"})
        if not stack.wait_for_service_status(expected, timeout_s=settle_s):
            say(f"our service did not report {sorted(expected)} within {settle_s:g} s; running anyway")
        window = "10s"
        if prom is not None:
            # rate() under-reports until a whole window of samples exists: wait for one, bounded.
            remaining = 11.0 - (time.monotonic() - started)
            if remaining > 0:
                say(f"letting Prometheus collect a full {window} window ({remaining:.0f} s)")
                time.sleep(remaining)
            query = (f"sum(rate(mistral_errors_total[{window}]))" if mode not in ("ok", "slow")
                     else f"sum(rate(mistral_requests_total[{window}]))")
            if not prom.wait_for_data(query, timeout_s=20):
                say("Prometheus has no samples of the fault yet; step 3 will show what it has")
        parameters = {"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                      "prometheus_url": prom.url if prom else "", "metrics_window": window,
                      "kubeconfig": str(kubeconfig), "incident_id": incident_id, "operator": "make demo",
                      "timeout_s": 3.0}
        say("running notebooks/triage.ipynb headless")
        return run_notebook("triage", parameters, output_root=output_root, progress=progress, record_dir=record_dir)
