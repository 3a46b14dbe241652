"""Incident annotations on the Grafana dashboard: detection, mitigation and resolution, through Grafana's
HTTP API (`POST /api/annotations` with dashboardUID, time, tags, text; `DELETE /api/annotations/:id` undoes).

A plain httpx client, not `grafana-client`: grafana-client 5 depends on niquests and urllib3-future,
whose wheel installs its own `urllib3/` package over the real urllib3 that the official Kubernetes
client (and requests) use in the same environment. Two JSON calls do not justify that risk.

The service-account token is read from the environment variable *named* by `token_env` and is only
sent in the Authorization header: never a parameter, never in a record. Nothing is posted unless
`apply_changes` is true; each annotation (posted or dry run) is recorded in the incident's
`incident.json` under `grafana_annotations` with what, when, who, before/after and the undo command.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .. import params
from .._time import iso_z, parse as parse_time
from ..errors import ParameterError, RunbookError
from ..redact import scrub
from ..secrets import read_secret
from . import DEFAULT_TOKEN_ENV, EVENTS
from .dashboard import ANNOTATION_TAG, DASHBOARD_UID

INDEX_KEY = "grafana_annotations"
MAX_TEXT = 2000  # annotation text is shown on hover: the verdict line, not the record


@dataclass(frozen=True)
class GrafanaTarget:
    """Where annotations go: Grafana's base URL, the dashboard, the NAME of the token's env variable."""

    url: str
    dashboard_uid: str = DASHBOARD_UID
    token_env: str = DEFAULT_TOKEN_ENV
    timeout_s: float = 5.0
    ca_bundle: str = ""

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/d/{self.dashboard_uid}"


def grafana_target(url: object, *, dashboard_uid: object = DASHBOARD_UID, token_env: object = DEFAULT_TOKEN_ENV,
                   timeout_s: object = 5.0, ca_bundle: object = "") -> GrafanaTarget:
    """A checked GrafanaTarget; a bad value raises ParameterError naming the option."""
    uid = params.text("dashboard_uid", dashboard_uid, maximum=40, allow_empty=False)
    return GrafanaTarget(url=params.url("grafana_url", url).rstrip("/"), dashboard_uid=uid,
                         token_env=params.env_var_name("token_env", token_env),
                         timeout_s=params.timeout("timeout_s", timeout_s),
                         ca_bundle=params.ca_file("ca_bundle", ca_bundle) if ca_bundle else "")


def incident_events(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """event -> {"time": ISO, "text": ...} for the moments the incident record knows."""
    ident = str(index.get("id") or "?")
    what = " ".join(str(index[k]) for k in ("severity", "error_class") if index.get(k))
    alert = index.get("alert") if isinstance(index.get("alert"), dict) else {}
    resolved = index.get("resolved") if isinstance(index.get("resolved"), dict) else {}
    changes = [c for c in index.get("changes_applied") or [] if isinstance(c, dict)]
    times = {"detection": alert.get("starts_at") or index.get("started_at"),
             "mitigation": index.get("mitigated_at") or (changes[0].get("at") if changes else None),
             "resolution": index.get("resolved_at") or resolved.get("at")}
    texts = {"detection": f"Incident {ident} detected" + (f" ({what})" if what else "")
                          + (f": {index['verdict']}" if index.get("verdict") else ""),
             "mitigation": f"Incident {ident} mitigated: "
                           + ("; ".join(f"{c.get('action')} on {c.get('target')}" for c in changes)
                              or str(index.get("diagnosis") or "see the record")),
             "resolution": f"Incident {ident} resolved"}
    out = {}
    for event in EVENTS:
        when = parse_time(times[event])
        if when is not None:
            out[event] = {"time": iso_z(when, "milliseconds"), "text": scrub(texts[event])[:MAX_TEXT]}
    return out


def annotation_body(target: GrafanaTarget, incident_id: str, event: str, time_iso: str, text: str) -> dict[str, Any]:
    """The JSON Grafana's POST /api/annotations takes (time in epoch milliseconds)."""
    when = parse_time(time_iso)
    if when is None:
        raise ParameterError("time", time_iso, "an ISO-8601 time, e.g. 2026-11-23T10:00:52Z")
    return {"dashboardUID": target.dashboard_uid, "time": int(when.timestamp() * 1000),
            "tags": [ANNOTATION_TAG, f"incident:{incident_id}", event], "text": text}


def post_command(target: GrafanaTarget, body: dict[str, Any]) -> str:
    """The equivalent curl: the token from $token_env at run time, never written out."""
    return (f'curl -sS --fail-with-body -X POST -H "Authorization: Bearer ${target.token_env}" '
            f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body, sort_keys=True))} "
            f"{shlex.quote(target.url + '/api/annotations')}")


def delete_command(target: GrafanaTarget, annotation_id: int) -> str:
    return (f'curl -sS --fail-with-body -X DELETE -H "Authorization: Bearer ${target.token_env}" '
            f"{shlex.quote(f'{target.url}/api/annotations/{annotation_id}')}")


def annotate_incident(folder: str | Path, target: GrafanaTarget, *, events: tuple[str, ...] | None = None,
                      apply_changes: bool = False, operator: str = "") -> list[dict[str, Any]]:
    """Annotate the dashboard at the incident's detection, mitigation and resolution (those it has).

    Dry run unless `apply_changes`; an event already posted for this incident is not posted twice.
    Every entry is appended to incident.json's `grafana_annotations`; the entries are returned.
    """
    from ..records.incident import edit_index, read_index

    chosen = _events(events)
    index = read_index(folder)
    if index is None:
        raise RunbookError(f"{folder} has no incident.json: not an incident folder")
    incident_id = str(index.get("id") or Path(folder).name)
    known = incident_events(index)
    posted = {e.get("event"): e for e in index.get(INDEX_KEY) or [] if isinstance(e, dict) and e.get("applied")}
    who = params.text("operator", operator).strip() or "unknown (pass --operator)"
    entries = []
    with _client(target) as client:
        identity = _whoami(client, target) if apply_changes else ""
        for event in chosen:
            if event not in known:
                entries.append(_entry(target, event, incident_id, who, None, note=f"no {event} time in the record"))
                continue
            body = annotation_body(target, incident_id, event, known[event]["time"], known[event]["text"])
            entry = _entry(target, event, incident_id, who, body, identity=identity)
            if event in posted:
                entry.update(note=f"already posted (annotation {posted[event].get('after', {}).get('id')}): "
                                  "not posted twice")
            elif apply_changes:
                _post(client, target, body, entry)
            entries.append(entry)
    with edit_index(folder) as idx:
        idx[INDEX_KEY] = [e for e in idx.get(INDEX_KEY) or [] if isinstance(e, dict)] + entries
    return entries


def _events(events: tuple[str, ...] | None) -> tuple[str, ...]:
    chosen = tuple(events or EVENTS)
    bad = [e for e in chosen if e not in EVENTS]
    if bad:
        raise ParameterError("event", bad[0], f"one of {', '.join(EVENTS)}")
    return chosen


def _entry(target: GrafanaTarget, event: str, incident_id: str, who: str, body: dict[str, Any] | None,
           identity: str = "", note: str = "") -> dict[str, Any]:
    return {"action": f"grafana annotation: {event}", "event": event, "target": target.dashboard_url,
            "incident": incident_id, "at": iso_z(timespec="milliseconds"), "who": who, "identity": identity,
            "body": body, "command": post_command(target, body) if body else "", "applied": False,
            "verified": None, "before": None, "after": None, "undo": "", "error": None, "note": note}


def _client(target: GrafanaTarget) -> httpx.Client:
    return httpx.Client(base_url=target.url, timeout=target.timeout_s, verify=target.ca_bundle or True,
                        follow_redirects=False)


def _headers(target: GrafanaTarget) -> dict[str, str] | None:
    token = read_secret(target.token_env)
    return {"Authorization": f"Bearer {token.reveal()}"} if token.present else None


def _whoami(client: httpx.Client, target: GrafanaTarget) -> str:
    """The login Grafana gives the token (GET /api/user), for the record; "" if it cannot say."""
    headers = _headers(target)
    if headers is None:
        return ""
    try:
        r = client.get("/api/user", headers=headers)
        return str(r.json().get("login") or "") if r.status_code == 200 else ""
    except (httpx.HTTPError, ValueError, AttributeError):
        return ""


def _post(client: httpx.Client, target: GrafanaTarget, body: dict[str, Any], entry: dict[str, Any]) -> None:
    """POST the annotation, then read it back by its incident tag: `verified` only when Grafana lists it."""
    headers = _headers(target)
    if headers is None:
        entry["error"] = f"${target.token_env} is unset or empty: not posted (a Grafana service-account token)"
        return
    try:
        r = client.post("/api/annotations", json=body, headers=headers)
    except httpx.HTTPError as exc:
        entry["error"] = scrub(f"{type(exc).__name__}: {exc}")[:300]
        return
    answer = _json(r)
    if r.status_code != 200 or not isinstance(answer.get("id"), int):
        entry["error"] = scrub(f"HTTP {r.status_code}: {answer.get('message') or r.text[:200]}")
        return
    ann_id = answer["id"]
    entry.update(applied=True, after={"id": ann_id, "time": body["time"]}, undo=delete_command(target, ann_id))
    try:
        listed = client.get("/api/annotations", headers=headers,
                            params=[("dashboardUID", target.dashboard_uid), ("tags", body["tags"][1]), ("limit", "100")])
        found = listed.json() if listed.status_code == 200 else []
        entry["verified"] = any(isinstance(a, dict) and a.get("id") == ann_id for a in found)
    except (httpx.HTTPError, ValueError):
        entry["verified"] = False


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        value = r.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
