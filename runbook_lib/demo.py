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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import SourceUnavailable

# What our service's health must show before the demo responds. A fault that fails every call is
# waited for until our service's window is all failures ("down"): responding at its first failed
# call ("degraded") records a partial outage that is not the incident (CI saw auth_failure triaged
# P2 "degraded: 60% fail" under load).
SERVICE_SHOWS = {"ok": {"ok"}, "slow": {"ok"}, "hang": {"down", "degraded", "ok", "unknown"},
                 "flaky": {"degraded", "down"}, "auth_failure": {"down"}, "rate_limited": {"down"},
                 "capacity_exceeded": {"down"}, "server_error": {"down"}}


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
PORT_NAMES = {"mistral": "the Mistral API simulator", "service": "our simulated service",
              "prometheus": "Prometheus", "kube": "the Kubernetes API emulator"}


@contextlib.contextmanager
def full_stack(key: str, *, mode: str = "ok", rate: float = 10.0, fixed_ports: bool = False,
               use_prometheus: bool = True, ports: Mapping[str, int] | None = None
               ) -> Iterator[tuple[Any, Any, Any]]:
    """Mistral simulator + our service (logging to a file) + cluster emulator + Prometheus if installed.

    Ports: free ones, or the notebooks' defaults (`fixed_ports`), each replaced by `ports[name]`
    when given (0 = a free one; names as in FIXED_PORTS). Every fixed port is checked first:
    `errors.PortInUse` names the first one taken before anything starts. Yields (stack, kube,
    prom-or-None); everything is stopped in reverse order on exit.
    """
    import tempfile

    from .run.lab import check_port_free
    from .sim.kube import KubeEmulator, file_log_source
    from .sim.prometheus import find_binary
    from .sim.stack import EmbeddedStack

    chosen = {**(FIXED_PORTS if fixed_ports else dict.fromkeys(FIXED_PORTS, 0)), **(ports or {})}
    for name, port in chosen.items():
        if name != "prometheus" or (use_prometheus and find_binary()):
            check_port_free(PORT_NAMES[name], port, key=name)
    with tempfile.TemporaryDirectory(prefix="runbook-stack-") as tmp:
        log = f"{tmp}/service.log"
        with EmbeddedStack(api_key=key, mode=mode, rate=rate, log_path=log, mistral_port=chosen["mistral"],
                           service_port=chosen["service"]) as stack, \
                KubeEmulator(port=chosen["kube"], log_source=file_log_source(log), api_key=key) as kube, \
                optional_prometheus(stack.service.url, use_prometheus, port=chosen["prometheus"]) as prom:
            say(f"Mistral simulator {stack.mistral_url}, our service {stack.service_health_url}, "
                f"Kubernetes API emulator {kube.url}")
            yield stack, kube, prom


def run_demo(mode: str = "rate_limited", *, rate: float = 10.0, settle_s: float = 10.0,
             output_root: str = "outputs", incident_id: str | None = None, progress: bool = True,
             use_prometheus: bool = True) -> Any:
    """Start everything, inject `mode`, run triage headless, return the RunResult."""
    from pathlib import Path

    from .run.execute import new_record_dir, run_notebook

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


def run_incident_demo(mode: str = "rate_limited", *, rate: float = 10.0, settle_s: float = 10.0,
                      output_root: str = "outputs", incident_id: str | None = None, progress: bool = True,
                      use_prometheus: bool = True, apply_changes: bool = False, impact_s: float = 10.0
                      ) -> dict[str, Any]:
    """The whole cycle on the embedded stack: fault, `respond`, recovery, evidence, postmortem.

    Returns the incident index (with its evidence and postmortem sections). Changes are dry runs
    unless `apply_changes` (they would only touch the emulator, but the demo shows the default).
    """
    from pathlib import Path

    from .run.execute import run_notebook
    from .records.incident import read_index
    from .run.respond import respond

    key = ensure_key()
    incident_id = incident_id or f"demo-{mode}"
    say(f"starting the embedded stack; will inject {mode!r}, respond, recover, collect evidence, write a postmortem")
    with full_stack(key, rate=rate, use_prometheus=use_prometheus) as (stack, kube, prom):
        tmp_kc = Path(output_root).resolve() / ".embedded" / f"kubeconfig-{incident_id}.yaml"
        kubeconfig = str(kube.write_kubeconfig(tmp_kc))
        if prom is not None:
            prom.wait_for_data("sum(mistral_requests_total)", timeout_s=20)
        time.sleep(3)  # a little healthy traffic first, so the postmortem sees the edge
        injected = time.monotonic()
        stack.set_mode(mode)
        say(f"fault {mode!r} injected")
        if not stack.wait_for_service_status(SERVICE_SHOWS.get(mode, {"down", "degraded"}), timeout_s=settle_s):
            say("our service did not show the fault yet; responding anyway")
        say("runbook respond: triage, then the diagnosis it points to" + (" (changes APPLIED to the emulator)"
                                                                          if apply_changes else " (dry runs)"))
        index = respond({"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                         "prometheus_url": prom.url if prom else "", "metrics_window": "10s",
                         "kubeconfig": kubeconfig, "incident_id": incident_id, "operator": "make demo",
                         "timeout_s": 3.0, "apply_changes": apply_changes, "monitor_max_s": 2.0,
                         "status_feed_url": f"{stack.mistral_url}/feed.rss",  # the simulator's status page
                         "monitor_interval_s": 0.5},
                        output_root=output_root, progress=progress)
        folder = Path(index["folder"]).resolve()
        time.sleep(max(0.0, impact_s - (time.monotonic() - injected)))
        stack.set_mode("ok")
        say("fault cleared; waiting for our service to recover")
        stack.wait_for_service_status({"ok"}, timeout_s=20)
        time.sleep(4)  # a few clean scrapes after recovery
        say("collecting the evidence bundle")
        run_notebook("evidence", {"incident_folder": str(folder), "prometheus_url": prom.url if prom else "",
                                  "kubeconfig": kubeconfig, "api_key_env": "MISTRAL_API_KEY", "margin": "2m",
                                  "timeout_s": 5.0, "incident_id": incident_id},
                     output_root=output_root, progress=progress, record_dir=folder)
    say("writing the postmortem")
    run_notebook("postmortem", {"source": str(folder), "incident_id": incident_id}, output_root=output_root,
                 progress=progress, record_dir=folder)
    return read_index(folder) or {}


def run_lab(notebook: str = "triage", parameters: dict[str, Any] | None = None, *, output_root: str | Path,
            mode: str = "ok", ports: Mapping[str, int] | None = None, lab_port: int = 8888,
            incident_id: str | None = None) -> int:
    """`runbook lab`: the embedded stack, the runbook's copy in a new incident folder, JupyterLab on it.

    The copy's parameters point at the stack as started (moved ports included). SIGINT/SIGTERM at
    any moment, even while starting, stop JupyterLab (and its kernels), seal the copy, and stop
    the stack and Prometheus: nothing started here outlives the command.
    """
    from ._signals import stop_signals
    from .run.catalog import declared_parameters
    from .run.interactive import prepare
    from .run.lab import check_port_free, serve

    check_port_free("JupyterLab", lab_port)
    declared = declared_parameters(notebook)  # an unknown notebook is refused before anything starts
    key = ensure_key()
    root = Path(output_root).resolve()
    with stop_signals() as stopping, full_stack(key, mode=mode, ports={**FIXED_PORTS, **(ports or {})}) as (
            stack, kube, prom):
        if stopping.is_set():
            return 0
        kubeconfig = kube.write_kubeconfig(root / ".embedded" / "kubeconfig.yaml")
        from_stack = {"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                      "prometheus_url": prom.url if prom else "", "kubeconfig": str(kubeconfig)}
        given = {**{k: v for k, v in from_stack.items() if k in declared}, **(parameters or {})}
        opened = prepare(notebook, given, output_root=root, incident_id=incident_id)
        print(f"prepared: {opened.path}", flush=True)
        # kernels inherit KUBECONFIG too: a runbook opened later in this lab reaches the emulator
        return serve([opened], output_root=root, port=lab_port, env={"KUBECONFIG": str(kubeconfig)},
                     stopping=stopping)
