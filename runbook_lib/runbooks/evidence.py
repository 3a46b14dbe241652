"""The evidence runbook's steps (notebooks/evidence.ipynb), one public method per cell.

Seed, collect-evidence.sh: `kubectl logs -l app=... --since=1h`, one `query_range` of
`mistral_errors_total`, `kubectl get deployment -o yaml | grep -v api-key`, `tar -czf`. Here the
window comes from the incident (its span plus a margin, or given), every pod and container (previous
instances too) is read, events and revisions are added, the Prometheus exports cover requests,
errors, latency and alerts, redaction is real (`redact`), and the bundle is written atomically with
a sha256 manifest that lists what could not be collected and why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import display, params, record
from ..records import collect as evidence, incident, signing
from ..errors import ParameterError
from .._time import iso_z, utc_stamp
from ..records.incident_data import newest_incident
from ..secrets import read_secret, refuses_secret_parameters


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, incident_folder: str, window_start: str, window_end: str, margin: str, prometheus_url: str,
          kubeconfig: str, kube_context: str, namespace: str, selector: str, deployment: str, api_key_env: str,
          extra_secret_envs: str, timeout_s: float, incident_id: str = "", prometheus_bearer_token_file: str = "",
          prometheus_username: str = "", prometheus_password_env: str = "", prometheus_ca_bundle: str = "",
          prometheus_client_cert: str = "", prometheus_client_key: str = "", prometheus_headers: str = "",
          metrics_selector: str = "") -> EvidenceRun:
    """Validate the parameters (the first bad one names itself) and find the incident."""
    cfg = {
        "incident_folder": params.text("incident_folder", incident_folder, maximum=4096),
        "window_start": params.utc_time("window_start", window_start),
        "window_end": params.utc_time("window_end", window_end),
        "margin_s": params.duration_seconds("margin", margin),
        "prometheus_url": params.url("prometheus_url", prometheus_url, allow_empty=True),
        "kubeconfig": params.text("kubeconfig", kubeconfig, maximum=4096),
        "kube_context": params.text("kube_context", kube_context),
        "namespace": params.namespace("namespace", namespace),
        "selector": params.label_selector("selector", selector),
        "deployment": params.namespace("deployment", deployment),
        "api_key_env": params.env_var_name("api_key_env", api_key_env),
        "extra_secret_envs": [params.env_var_name("extra_secret_envs", n.strip())
                              for n in params.text("extra_secret_envs", extra_secret_envs).split(",") if n.strip()],
        "timeout_s": params.timeout("timeout_s", timeout_s, maximum=120),
        "incident_id": params.incident_id("incident_id", incident_id) if incident_id else "",
        **params.prometheus_access(
            prometheus_bearer_token_file=prometheus_bearer_token_file, prometheus_username=prometheus_username,
            prometheus_password_env=prometheus_password_env, prometheus_ca_bundle=prometheus_ca_bundle,
            prometheus_client_cert=prometheus_client_cert, prometheus_client_key=prometheus_client_key,
            prometheus_headers=prometheus_headers, metrics_selector=metrics_selector),
    }
    return EvidenceRun(cfg)


def find_incident(folder: str) -> tuple[Path | None, dict[str, Any] | None, str]:
    """The incident folder to collect for, its index, and how it was chosen."""
    if folder:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ParameterError("incident_folder", folder, "an existing incident folder (see `runbook list`)")
        return path, incident.read_index(path), "given"
    path = newest_incident("incident_folder")  # under the run's own output root only; none there: refused
    return path, incident.read_index(path), f"the newest incident under {path.parent}"


def window(index: dict[str, Any] | None, given_start: float | None, given_end: float | None, margin_s: float,
           now: float) -> tuple[float, float, str]:
    """The collection window and the reason for it: given, else the incident's span plus the margin."""
    started, finished = incident.span(index or {})
    start = given_start if given_start is not None else (started or now) - margin_s
    end = given_end if given_end is not None else min(now, (finished or now) + margin_s)
    how = ("given" if given_start is not None and given_end is not None else
           f"the incident's span ({index.get('started_at')} to {index.get('finished_at') or 'now'}) plus "
           f"{margin_s / 60:g} min on each side (never after now)" if index else
           f"the last {margin_s / 60:g} min")
    if end <= start:
        raise ParameterError("window_end", given_end, f"a time after window_start ({iso_z(start)})")
    return start, end, how


class EvidenceRun:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.folder, self.index, self.chosen = find_incident(cfg["incident_folder"])
        self.start, self.end, self.window_reason = window(self.index, cfg["window_start"], cfg["window_end"],
                                                          cfg["margin_s"], time.time())
        self.manifest: dict[str, Any] | None = None
        self.bundle_path: Path | None = None
        shown = {**cfg, "incident_folder": str(self.folder or ""), "window_start": iso_z(self.start),
                 "window_end": iso_z(self.end)}
        record.record("parameters", shown, markdown=(
            f"Incident: `{self.folder or 'none'}` ({self.chosen}).\n\n"
            f"Window: **{shown['window_start']} to {shown['window_end']}** "
            f"({(self.end - self.start) / 60:.1f} min): {self.window_reason}.\n\n"
            + display.kv_table(((k, v) for k, v in shown.items() if k not in ("window_start", "window_end")),
                               ("parameter", "value"))))

    def secrets(self) -> list[str]:
        """Values to redact exactly (and in base64) wherever they appear; only fingerprints are shown."""
        names = [self.cfg["api_key_env"], *self.cfg["extra_secret_envs"]]
        if self.cfg["prometheus_password_env"]:
            names.append(self.cfg["prometheus_password_env"])
        refs = [read_secret(n) for n in names]
        record.record("redaction", {"exact_values": [r.describe() for r in refs]}, markdown=(
            "Redacted exactly, wherever they appear: " + "; ".join(str(r) for r in refs) + ". Also by pattern: "
            "values of env vars named like KEY/TOKEN/SECRET/PASSWORD, every Secret `data`/`stringData`, "
            "Authorization/X-Api-Key/Cookie headers, bearer tokens and key-shaped strings in log lines. A "
            "redacted value becomes `[REDACTED sha256:<12 hex>]`, so two of them can still be told apart."))
        return [v for r in refs if (v := r.reveal())]

    def collect(self) -> dict[str, Any]:
        """Read every source (bounded, concurrently), write the bundle atomically, print progress."""
        parent = self.folder or Path.cwd()
        name = f"evidence-{utc_stamp()}"
        print(f"collecting into {parent / name} ...", flush=True)
        t0 = time.monotonic()
        c = self.cfg
        from ..sources import metrics

        self.manifest = evidence.collect(
            parent, name, start=self.start, end=self.end, kubeconfig=c["kubeconfig"], context=c["kube_context"],
            namespace=c["namespace"], selector=c["selector"], deployment=c["deployment"],
            prometheus_url=metrics.Prometheus.from_config(c), incident_folder=self.folder, secrets=self.secrets(),
            timeout_s=c["timeout_s"], progress=lambda line: print("  " + line, flush=True))
        self.bundle_path = parent / name
        took = round(time.monotonic() - t0, 2)
        files, missing = self.manifest["files"], self.manifest["missing"]
        # the manifest's digest (and signature, with a key configured) kept outside the bundle
        seal = signing.seal((self.bundle_path / "manifest.json").read_bytes(), self.bundle_path)
        value = {"bundle": str(self.bundle_path), "archive": str(self.bundle_path) + ".tar.gz",
                 "files": len(files), "bytes": sum(f["bytes"] for f in files),
                 "missing": [f"{m['what']} ({m['reason']})" for m in missing],
                 "window": self.manifest["window"], "collected_at": iso_z(time.time()), "took_s": took,
                 "seal": seal}
        md = (f"Bundle `{value['bundle']}` and `{Path(value['archive']).name}`, {len(files)} files, "
              f"{value['bytes']:,} bytes, in {took} s. Manifest `{seal['manifest_sha256']}`"
              + (f", signed by `{seal['public_key']}` (`{seal['signature_file']}`)" if seal["signed"] else
                 " (not signed: no $RUNBOOK_SIGNING_KEY_FILE)") + ".\n\n"
              + display.table(("file", "what", "bytes", "sha256"),
                              [(f["path"], f["what"], f["bytes"], f["sha256"][:16] + "…") for f in files])
              + ("\n\n**Missing sources** (collection went on without them):\n\n"
                 + display.table(("source", "from", "reason"), [(m["what"], m["source"], m["reason"])
                                                                for m in missing]) if missing else
                 "\n\nEvery source was collected."))
        record.record("evidence", value, markdown=md)
        if self.folder is not None and self.index is not None:
            # relative to the incident folder (the bundle is written inside it): the archive can move
            incident.update_index(self.folder, evidence={
                **{k: value[k] for k in ("files", "missing", "window", "collected_at", "seal")},
                "bundle": _relative(self.bundle_path, self.folder),
                "archive": _relative(Path(value["archive"]), self.folder)})
        return value

    def verify(self) -> list[str]:
        """Re-hash the written bundle against its manifest: what a reviewer's `runbook verify` does later."""
        from ..records import bundle

        assert self.bundle_path is not None, "collect() first"
        problems = bundle.verify(self.bundle_path)
        record.record("bundle_check", {"problems": problems}, markdown=(
            f"`runbook verify {self.bundle_path}`: " + ("**intact**, every file matches its sha256."
                                                        if not problems else "**PROBLEMS**: " + "; ".join(problems))))
        return problems

    def summary(self) -> dict[str, Any]:
        assert self.manifest is not None, "collect() first"
        files, missing = len(self.manifest["files"]), len(self.manifest["missing"])
        # the bundle's name, not this machine's path: the verdict line travels with the archive
        line = (f"EVIDENCE: {files} files, {missing} source(s) missing -> {Path(self.bundle_path).name}.tar.gz"
                + ("" if not missing else " (see Missing sources)"))
        value = {"line": line, "bundle": str(self.bundle_path), "files": files, "missing": missing}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`\n\nNext: the postmortem runbook "
                      "(`runbook postmortem <incident>`) analyses this bundle.")
        return value


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to the incident folder when inside it (always, for a bundle), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return str(path)
