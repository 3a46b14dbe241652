"""Everything the postmortem reads about one incident, from its folder, its bundle, or both.

A source is an incident folder (`incident.json` and the executed notebooks; its newest evidence
bundle is used when there is one), an evidence bundle folder, or its `.tar.gz` (extracted safely
into a temporary folder). Whatever is absent is listed in `missing` with the reason, so the
analysis can say what it is based on.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bundle, incident, signing
from ..errors import ParameterError
from ..paths import outputs_dir
from ..record import is_change, iter_records

NOT_RECORDS = ("evidence", "postmortem")
LATENCY = {"p50": "latency_p50_s", "p95": "latency_p95_s", "p99": "latency_p99_s"}
DURATION_BUCKETS = "request_duration_buckets"  # cumulative histogram counters by le: slow calls per step


@dataclass
class IncidentData:
    source: str
    folder: Path | None = None          # the incident folder: postmortem.md goes here
    bundle: Path | None = None
    index: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    seal_problems: list[str] = field(default_factory=list)
    seal: dict[str, Any] = field(default_factory=dict)  # the manifest's digest/signature recorded at collection
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # notebook -> records in order
    frames: dict[str, Any] = field(default_factory=dict)   # metrics export name -> DataFrame
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: Path | None = None
    missing: list[str] = field(default_factory=list)

    def values(self, name: str) -> list[tuple[str, Any]]:
        """(notebook, value) of every record called `name`, in run order."""
        return [(nb, r["value"]) for nb, rs in self.records.items() for r in rs if r.get("name") == name]

    def changes(self) -> list[dict[str, Any]]:
        """Applied changes, from the records (with kubectl and undo), else from the index."""
        found = [{**v, "notebook": nb} for nb, rs in self.records.items() for r in rs
                 if is_change(r.get("name")) and isinstance(v := r.get("value"), dict) and v.get("applied")]
        return found or [dict(c) for c in self.index.get("changes_applied") or []]

    def step_s(self) -> float | None:
        """The export step, read from the sample spacing of the counter export."""
        import pandas as pd

        frame = self.frames.get("requests_total_by_model_code")
        if frame is None or frame.empty:
            return None
        times = pd.Series(sorted(pd.to_datetime(frame["time"], utc=True).unique()))
        if len(times) < 2:
            return None
        return float(times.diff().dropna().dt.total_seconds().median())


def newest_incident(parameter: str) -> Path:
    """The incident an empty `parameter` defaults to: the newest under the run's own output root only.

    The root is `paths.outputs_dir()`: the `--output-dir` the run was given (handed to the kernel),
    never the records beside the installed package, so a run started in one checkout cannot pick
    (and write into) another checkout's incident. With none there, the run fails saying where it looked.
    """
    root = outputs_dir()
    newest = incident.newest(root)
    if newest is None:
        raise ParameterError(parameter, "", f"an incident folder (see `runbook list`); left empty it means the "
                             f"newest incident under the run's output root {root}, and there is none there "
                             "(pass the folder, or run with --output-dir / $RUNBOOK_OUTPUTS naming the root "
                             "that holds it)")
    return newest


def resolve(source: str) -> Path:
    """The path a `source` parameter names: given, else the newest incident under the run's output root."""
    if source:
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise ParameterError("source", source, "an incident folder, an evidence bundle folder or its .tar.gz "
                                 "(see `runbook list` / `runbook show`)")
        return path
    return newest_incident("source")


def load(source: str, *, extract_to: str | Path | None = None) -> IncidentData:
    """Read an incident folder and/or bundle (see the module docstring)."""
    path = resolve(source)
    data = IncidentData(source=str(path))
    if path.is_file():
        if not path.name.endswith(".tar.gz"):
            raise ParameterError("source", source, "a folder or an evidence bundle's .tar.gz")
        data.bundle = _extract(path, Path(extract_to or tempfile.mkdtemp(prefix="bundle-")))
        data.folder = path.parent if incident.read_index(path.parent) is not None else None
    elif (path / bundle.MANIFEST).exists():
        data.bundle = path
        data.folder = path.parent if incident.read_index(path.parent) is not None else None
    elif incident.read_index(path) is not None:
        data.folder = path
        data.bundle = _bundle_of(path)
    else:
        raise ParameterError("source", source, "an incident folder (with incident.json) or an evidence bundle "
                             "(with manifest.json)")
    if data.folder is not None:
        data.index = incident.read_index(data.folder) or {}
        for nb in sorted(data.folder.glob("*.ipynb"), key=lambda p: p.stat().st_mtime):
            if nb.stem not in NOT_RECORDS:
                data.records[nb.stem] = iter_records(nb)
    if data.bundle is None:
        data.missing.append("evidence bundle: none for this incident (run the evidence runbook); metrics, logs "
                            "and events are not available")
    else:
        _read_bundle(data)
    return data


def _bundle_of(folder: Path) -> Path | None:
    index = incident.read_index(folder) or {}
    named = (index.get("evidence") or {}).get("bundle")
    if named:  # relative to the folder (an absolute one from older records: its name in this folder)
        candidate = folder / (Path(named).name if Path(named).is_absolute() else named)
        if (candidate / bundle.MANIFEST).exists():
            return candidate
    found = sorted(p for p in folder.glob("evidence-*") if (p / bundle.MANIFEST).exists())
    return found[-1] if found else None


def _extract(archive: Path, into: Path) -> Path:
    """Safe extraction (no absolute paths, `..`, links or devices) of a bundle archive; its one top folder."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) != 1 or not (tops[0] / bundle.MANIFEST).exists():
        raise ParameterError("source", str(archive), "an evidence bundle archive (one folder with manifest.json)")
    return tops[0]


def _read_bundle(data: IncidentData) -> None:
    import pandas as pd

    b = data.bundle
    assert b is not None
    data.manifest = json.loads((b / bundle.MANIFEST).read_text("utf-8"))
    data.seal_problems = bundle.verify(b)
    evidence = data.index.get("evidence") if isinstance(data.index.get("evidence"), dict) else {}
    seal = evidence.get("seal") if isinstance(evidence.get("seal"), dict) else {}
    if seal and Path(str(evidence.get("bundle") or "")).name == b.name:  # the digest recorded outside the bundle
        data.seal = seal
        data.seal_problems += signing.check((b / bundle.MANIFEST).read_bytes(), seal, None)[0]
    data.missing += [f"{m['what']}: {m['reason']}" for m in data.manifest.get("missing", [])]
    for csv in sorted((b / "metrics").glob("*.csv")):
        text = csv.read_text("utf-8")
        data.frames[csv.stem] = pd.read_csv(io.StringIO(text), dtype={"code": str}) if text.strip() else \
            pd.DataFrame(columns=["time", "value"])
    events = b / "k8s" / "events.json"
    if events.exists():
        value = json.loads(events.read_text("utf-8"))
        data.events = value.get("items") or value.get("events") or [] if isinstance(value, dict) else value
    logs = b / "logs" / "pods.jsonl"
    data.logs = logs if logs.exists() else None
    if not data.records:  # no incident folder beside the bundle: the records it carries
        for path in sorted((b / "records").glob("*.json"), key=lambda p: p.stat().st_mtime):
            value = json.loads(path.read_text("utf-8"))
            if path.stem == "incident":
                data.index = value
            elif isinstance(value, list):
                data.records[path.stem] = value
