"""Regenerate the replay corpus: `.venv/bin/python -m tests.incidents.make_corpus [NAME ...]`.

Each incident is made as a real one is: the embedded stack with a real Prometheus scraping our
service, a fault injected (the demo's and the truth matrix's modes), `respond`, the evidence
runbook (bundle: metrics range exports, pod logs, events, redacted objects, the records) and the
postmortem. The folder is copied here without its notebooks' HTML and figures (the replay reads
incident.json, the notebooks' records, the run.json parameters and the bundle). A planted on-call key
and Slack token are in the environment throughout; the script fails if either is in any file kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (simulator mode, its options)
CORPUS = {"rate-limited": ("rate_limited", {}), "server-error-502": ("server_error", {"status": 502}),
          "auth-failure": ("auth_failure", {}), "timeout-hang": ("hang", {})}
KEEP_SUFFIXES = (".json", ".ipynb", ".md", ".csv", ".jsonl", ".yaml", ".txt")


def make(name: str, out: Path = HERE) -> Path:
    """Make one incident and copy it to `out/name`; returns that folder."""
    from runbook_lib.demo import full_stack
    from runbook_lib.run.execute import run_notebook
    from runbook_lib.run.respond import respond

    mode, options = CORPUS[name]
    planted = "sk-planted-" + secrets.token_urlsafe(24)
    key = "sim-" + secrets.token_urlsafe(24)
    saved = dict(os.environ)
    os.environ.update({"MISTRAL_API_KEY": key, "SLACK_BOT_TOKEN": planted, "PAGERDUTY_ROUTING_KEY": planted})
    os.environ.pop("KUBECONFIG", None)
    try:
        with tempfile.TemporaryDirectory() as tmp, full_stack(key, rate=10.0) as (st, kube, prom):
            if prom is None:
                raise SystemExit("make_corpus: Prometheus is needed (scripts/ensure-servers.sh test)")
            kubeconfig = str(kube.write_kubeconfig(f"{tmp}/kubeconfig"))
            assert prom.wait_for_data("sum(mistral_requests_total)", timeout_s=30)
            time.sleep(3)  # some healthy traffic first
            st.set_mode(mode, **options)
            # a hang shows at our service only once its own call timeouts end (slower than an error reply)
            assert st.wait_for_service_status({"down", "degraded"} if mode == "hang" else {"down"}, timeout_s=45)
            time.sleep(2)
            index = respond({"mistral_url": st.mistral_url, "service_health_url": st.service_health_url,
                             "prometheus_url": prom.url, "metrics_window": "10s", "kubeconfig": kubeconfig,
                             "timeout_s": 2.0, "incident_id": f"INC-{name}", "operator": "corpus",
                             "sample_requests": 2, "sample_interval_s": 0.1,
                             "monitor_interval_s": 0.2, "monitor_max_s": 1.0, "healthy_needed": 2},
                            output_root=tmp, progress=False)
            st.set_mode("ok")
            assert st.wait_for_service_status({"ok"}, timeout_s=15)
            time.sleep(4)  # a few clean scrapes after recovery
            folder = Path(index["folder"])
            ev = run_notebook("evidence", {"incident_folder": str(folder), "prometheus_url": prom.url,
                                           "kubeconfig": kubeconfig, "timeout_s": 5.0, "margin": "1m"},
                              output_root=tmp, progress=False, record_dir=folder)
            assert ev.ok, ev.error
            pm = run_notebook("postmortem", {"source": str(folder), "incident_id": index["id"]},
                              output_root=tmp, progress=False, record_dir=folder)
            assert pm.ok, pm.error
            target = out / name
            shutil.rmtree(target, ignore_errors=True)
            _copy(folder, target)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    leaks = [str(p) for p in target.rglob("*") if p.is_file()
             for s in (planted, key) if s.encode() in p.read_bytes()]
    if leaks:
        shutil.rmtree(target)
        raise SystemExit(f"make_corpus: a planted secret is in {leaks}")
    return target


def _copy(folder: Path, target: Path) -> None:
    """The folder minus rendered output (HTML, figures) and the bundle's .tar.gz (its folder is kept)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in KEEP_SUFFIXES:
            dest = target / path.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    index = json.loads((target / "incident.json").read_text())
    (target / "incident.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    for arg in sys.argv[1:] or list(CORPUS):
        done = make(arg)
        size = sum(p.stat().st_size for p in done.rglob("*") if p.is_file())
        print(f"{arg}: {done} ({size / 1024:.0f} KB)")
