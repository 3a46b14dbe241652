"""The original incident a replay rebuilds: its index, its records, its parameters, its pod logs.

Why a module of its own: a replay is only as good as what the archive kept, so everything it reads
is gathered here once, and every gap is named (which record, and what the replay then cannot
check) instead of surfacing later as a wrong verdict. Refusals are `ParameterError("INCIDENT")`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ParameterError
from ...records import incident_data
from ...sources import loglines

ARG = "INCIDENT"
# The bundle's raw-counter exports the replay's Prometheus is loaded from (replay/prom.py).
METRIC_EXPORTS = ("requests_total_by_model_code", "errors_total_by_model_code")
TRIAGE = "triage"
# The record a replay cannot do without, and the optional ones with what their absence costs.
NEEDED = ("mistral_api", "what the Mistral API answered triage's probes: without it the replay cannot tell which "
                         "fault to inject, so it cannot rebuild the incident")
OPTIONAL = {
    "verdict": "triage's verdict: the replay runs, but severity, routed notebook and verdict class cannot be "
               "compared with the original",
    "service_health": "our service's health as triage saw it: the replay does not wait for our service to show "
                      "the same state before responding",
}


@dataclass
class Original:
    """What a replay needs from the archived incident (see `read`)."""

    path: Path                                   # the INCIDENT argument, resolved
    folder: Path | None                          # the incident folder (None: a bundle alone)
    id: str
    index: dict[str, Any]
    records: dict[str, dict[str, Any]]           # notebook -> record name -> last value
    parameters: dict[str, Any]                   # what the original runs were given
    parameters_from: str                         # where `parameters` was read
    logs: dict[str, Any] | None = None           # the bundle's pod logs, summarised (None: no bundle logs)
    bundle: Path | None = None                   # the evidence bundle's folder (None: no bundle)
    frames: dict[str, Any] = field(default_factory=dict)  # the bundle's metrics exports (name -> DataFrame)
    manifest: dict[str, Any] | None = None       # the bundle's manifest
    missing: list[str] = field(default_factory=list)  # optional records absent, with what that costs

    @property
    def triage(self) -> dict[str, Any]:
        return self.records.get(TRIAGE, {})

    def diagnosis(self) -> str | None:
        """The diagnosis notebook the original ran after triage (from its index, else its records)."""
        names = [n.get("name") for n in self.index.get("notebooks") or [] if isinstance(n, dict)]
        names += list(self.records)
        return next((n for n in names if isinstance(n, str) and n.startswith("diagnose_")), None)


def read(incident: str | Path) -> Original:
    """Read an incident folder, an evidence bundle folder or its .tar.gz; refuse what a replay cannot use."""
    if not str(incident).strip():
        raise ParameterError(ARG, incident, "an incident folder (see `runbook list`), an evidence bundle folder or "
                                            "its .tar.gz; an empty value is not taken to mean the newest one")
    try:
        data = incident_data.load(str(incident))
    except ParameterError as exc:  # load() names its own parameter `source`
        raise ParameterError(ARG, str(incident), exc.accepted) from None
    records = {nb: {r["name"]: r.get("value") for r in rs if isinstance(r, dict) and "name" in r}
               for nb, rs in data.records.items()}
    where = data.folder or data.bundle or Path(data.source)
    triage = records.get(TRIAGE)
    if triage is None:
        raise ParameterError(ARG, str(incident), f"an incident with triage's records; {where} has none "
                             f"(no triage.ipynb, nor records/triage.json in a bundle): {NEEDED[1]}")
    if not isinstance(triage.get(NEEDED[0]), dict):
        raise ParameterError(ARG, str(incident), f"an incident whose triage recorded {NEEDED[0]!r}; {where}'s "
                             f"triage has no {NEEDED[0]!r} record (the run stopped before its probes?): {NEEDED[1]}")
    missing = [f"triage record {name!r}: {cost}" for name, cost in OPTIONAL.items() if name not in triage]
    parameters, parameters_from = _parameters(data.folder, records)
    if not parameters:
        missing.append("the original's parameters (no <notebook>.run.json, no 'parameters' record): the replay "
                       "uses the notebooks' defaults for everything the stack does not set")
    logs = summarise_logs(data.logs) if data.logs is not None else None
    if logs is None:
        missing.append("pod logs (no evidence bundle with logs/pods.jsonl): the recorded probes are not "
                       "cross-checked against what our service logged")
    if data.bundle is None:
        missing.append("evidence bundle (run the evidence runbook on the original): no metrics for the replay's "
                       "Prometheus, so the runbooks' metric steps say 'not configured', and evidence and the "
                       "postmortem are not re-run: impact window and counts, TTD/TTM/TTR are not compared")
    elif not any(name in data.frames for name in METRIC_EXPORTS):
        missing.append("metrics exports (the bundle holds none of " + ", ".join(METRIC_EXPORTS) + "; Prometheus "
                       "was not configured or not reachable when it was collected): the replay runs without "
                       "Prometheus, and impact window and counts, TTD/TTM/TTR are not compared")
    index = data.index or {}
    return Original(path=Path(data.source), folder=data.folder, id=str(index.get("id") or where.name), index=index,
                    records=records, parameters=parameters, parameters_from=parameters_from, logs=logs,
                    missing=missing, bundle=data.bundle, frames=dict(data.frames), manifest=data.manifest)


def _parameters(folder: Path | None, records: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """What the original runs were given: their run.json files (triage's last wins), else the records."""
    found: dict[str, Any] = {}
    sources = []
    if folder is not None:
        runs = [p for p in folder.glob("*.run.json") if p.name.split(".")[0] not in incident_data.NOT_RECORDS]
        for path in sorted(runs, key=lambda p: (p.name.split(".")[0] == TRIAGE, p.name)):
            try:
                value = json.loads(path.read_text("utf-8")).get("parameters")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(value, dict):
                found.update(value)
                sources.append(path.name)
    if found:
        return found, ", ".join(sources)
    for nb in sorted(records, key=lambda n: n == TRIAGE):  # the effective values each runbook recorded
        if nb in incident_data.NOT_RECORDS:
            continue
        value = records[nb].get("parameters")
        if isinstance(value, dict):
            found.update(value)
            sources.append(f"{nb}'s 'parameters' record")
    return found, ", ".join(sources)


def summarise_logs(path: Path) -> dict[str, Any]:
    """The error classes of the failed calls in a bundle's logs/pods.jsonl (one JSON entry per line)."""
    classes: Counter[str] = Counter()
    calls = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            entry = loglines.parse(line)
            if entry is None or entry.get("code") is None:
                continue
            calls += 1
            if loglines.is_error(str(entry["code"])):
                classes[str(entry.get("error_class") or "other")] += 1
    dominant = classes.most_common(1)[0][0] if classes else None
    return {"file": str(path), "calls": calls, "errors": sum(classes.values()), "error_classes": dict(classes),
            "dominant": dominant}
