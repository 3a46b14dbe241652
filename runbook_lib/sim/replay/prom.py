"""A real Prometheus holding the bundle's metrics, for the replayed runbooks to query.

How: the evidence bundle's raw-counter range exports (`records/collect.py` RANGE_QUERIES:
requests and errors by model and code, the latency histogram's buckets, ALERTS) are written as
OpenMetrics, imported with the real `promtool tsdb create-blocks-from openmetrics` into a fresh
storage folder, and a real `prometheus` is started on that storage with no scrape target. The
rate, ratio and quantile exports are not imported: the runbooks compute them from the counters.

Why the series are shifted to now (every sample moved by the same offset, the original's triage
start mapped to the replay's start): the runbooks query relative to *now* (triage's and the
diagnoses' `metrics_window` is "the last N minutes"; evidence and the postmortem query the replay's
own incident window). Left at their original timestamps, the replay's triage would see no metrics
at all, and the comparison would test nothing. With one offset for every sample, what triage saw
N minutes before it started is what the replay's triage sees N minutes before it starts; the shift
is recorded (`replay.prometheus.shift_s`). The replay's timeline (TTD/TTM/TTR) is measured on the
replay's own clock, so the shift does not enter the compared durations.

Fidelity limits, recorded: the exports are sums by (model, code) and by (le) at the export's step
(at least 15 s), so per-pod series and sub-step spikes are gone; `--query.lookback-delta` is set to
at least twice that step so an instant query between two exported samples still finds one.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..prometheus import LocalPrometheus, find_binary
from ...errors import SourceUnavailable

# export name -> the raw series it holds (its labels are the export's columns).
SERIES = {"requests_total_by_model_code": "mistral_requests_total",
          "errors_total_by_model_code": "mistral_errors_total",
          "request_duration_buckets": "mistral_request_duration_seconds_bucket",
          "alerts_firing": "ALERTS"}
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Loaded:
    """What was imported: per series the sample count, the offset, the export's step, what was missing."""

    series: dict[str, int] = field(default_factory=dict)
    shift_s: float = 0.0
    step_s: float = 15.0
    scrape_s: float = 15.0
    missing: list[str] = field(default_factory=list)
    extra_labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"series": self.series, "shift_s": round(self.shift_s, 3), "step_s": self.step_s,
                "scrape_interval_s": self.scrape_s, "missing": self.missing, "extra_labels": self.extra_labels}


def selector_labels(selector: str) -> dict[str, str]:
    """The equality matchers of a PromQL selector (`{namespace="prod",app="x"}`): the replay adds them
    to every imported `mistral_*` series, so the runbooks' scoped queries find them (regex or negative
    matchers cannot be satisfied by a label value and are left out)."""
    return {m.group(1): m.group(3) for m in _MATCHER.finditer(selector or "") if m.group(2) == "="}


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics(frames: dict[str, Any], shift_s: float, extra_labels: dict[str, str] | None = None,
                not_after: float | None = None) -> tuple[str, dict[str, int]]:
    """The raw-counter exports as one OpenMetrics text (families grouped, samples in time order).

    `not_after`: samples later than this (after shifting) are left out.
    """
    lines: list[str] = []
    counts: dict[str, int] = {}
    for export, name in SERIES.items():
        frame = frames.get(export)
        if frame is None or len(frame) == 0 or "time" not in frame or "value" not in frame:
            continue
        labels = [c for c in frame.columns if c not in ("time", "value") and _LABEL.match(str(c))
                  and not str(c).startswith("__")]
        extra = dict(extra_labels or {}) if name.startswith("mistral_") else {}
        rows: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for rec in frame.to_dict("records"):
            value, ts = rec.get("value"), _epoch(rec.get("time"))
            if value is None or ts is None or (isinstance(value, float) and math.isnan(value)):
                continue
            ts += shift_s
            if not_after is not None and ts > not_after:
                continue
            key = {str(k): str(rec[k]) for k in labels if rec.get(k) is not None and str(rec[k]) != "nan"}
            key.update({k: v for k, v in extra.items() if k not in key})
            rows.setdefault(tuple(sorted(key.items())), []).append((ts, float(value)))
        if not rows:
            continue
        lines.append(f"# TYPE {name} unknown")
        n = 0
        for key, samples in sorted(rows.items()):
            text = ",".join(f'{k}="{_esc(v)}"' for k, v in key)
            for ts, value in sorted(samples):
                lines.append(f"{name}{{{text}}} {value!r} {ts:.3f}")
                n += 1
        counts[name] = n
    lines.append("# EOF")
    return "\n".join(lines) + "\n", counts


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    try:
        import pandas as pd

        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        return stamp.timestamp()
    except (ValueError, TypeError):
        return None


def import_blocks(text: str, storage: Path, timeout_s: float = 120.0) -> str:
    """`promtool tsdb create-blocks-from openmetrics FILE STORAGE`; its output. SourceUnavailable on failure."""
    promtool = find_binary("promtool")
    if promtool is None:
        raise SourceUnavailable("promtool is not installed (the Debian package prometheus ships it; "
                                "scripts/ensure-servers.sh test installs it)")
    storage.mkdir(parents=True, exist_ok=True)
    source = storage.parent / "bundle.om.txt"
    source.write_text(text, encoding="utf-8")
    try:
        done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise SourceUnavailable(f"promtool did not finish importing within {timeout_s:g} s") from exc
    if done.returncode != 0:
        raise SourceUnavailable(f"promtool tsdb create-blocks-from openmetrics failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout)[-800:]}")
    return done.stdout


class BundlePrometheus(LocalPrometheus):
    """A real `prometheus` serving imported blocks only (no scrape target), at the original's scrape interval."""

    title = "Prometheus (bundle)"

    def __init__(self, storage: Path, *, scrape_s: float, lookback_s: float, ready_timeout_s: float = 30.0) -> None:
        super().__init__([], ready_timeout_s=ready_timeout_s)
        self.storage, self.scrape_s, self.lookback_s = storage, scrape_s, lookback_s

    def config_text(self) -> str:
        # The runbooks read the scrape interval from here to size their rate windows, as on the original.
        return f"global:\n  scrape_interval: {self.scrape_s:g}s\n  evaluation_interval: {self.scrape_s:g}s\n"

    def start(self) -> BundlePrometheus:
        binary = find_binary("prometheus")
        if binary is None:
            raise SourceUnavailable("Prometheus is not installed (scripts/ensure-servers.sh test installs it)")
        self._launch(binary, [
            "--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # retention counts back from the newest block: ample, so no imported block is deleted at start
            "--storage.tsdb.retention.time=3650d",
            f"--query.lookback-delta={int(self.lookback_s)}s", "--log.level=warn"], "runbook-replay-prom-")
        return self


def scrape_of(manifest: dict[str, Any] | None) -> tuple[float, float]:
    """The original's (step, scrape interval) in seconds, from the bundle manifest's export descriptions."""
    step, scrape = 15.0, 15.0
    for entry in (manifest or {}).get("files") or []:
        what = str(entry.get("what") or "") if isinstance(entry, dict) else ""
        m = re.search(r"step ([\d.]+) s, rate window [\d.]+ s, scrape ([\d.]+) s", what)
        if m:
            return float(m.group(1)), float(m.group(2))
    return step, scrape


def load(frames: dict[str, Any], manifest: dict[str, Any] | None, *, anchor: float | None, selector: str,
         workdir: Path) -> tuple[Loaded, Path]:
    """Write + import the bundle's series shifted so `anchor` (the original triage's start) is now.

    Returns what was loaded and the storage folder. SourceUnavailable when nothing can be imported.
    """
    loaded = Loaded()
    loaded.step_s, loaded.scrape_s = scrape_of(manifest)
    loaded.missing = [f"metrics export {e!r} (not in the bundle): {s} is not in the replay's Prometheus"
                      for e, s in SERIES.items() if e not in frames]
    loaded.extra_labels = selector_labels(selector)
    now = time.time()
    if anchor is None:  # no triage start recorded: the latest exported sample becomes now
        stamps = [t for f in frames.values() if f is not None and "time" in f for t in map(_epoch, f["time"]) if t]
        anchor = max(stamps) if stamps else now
    loaded.shift_s = float(round(now - anchor))  # whole seconds: the shifted evidence window (ISO, 1 s) stays aligned
    text, loaded.series = openmetrics(frames, loaded.shift_s, loaded.extra_labels)
    if not loaded.series:
        raise SourceUnavailable("the bundle's metrics exports hold no raw-counter samples to import")
    storage = workdir / "data"
    import_blocks(text, storage)
    return loaded, storage


def temporary_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="runbook-replay-tsdb-")
