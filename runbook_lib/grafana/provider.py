"""Grafana annotations as a `notify` provider: the runbooks' own updates annotate the dashboard.

`notify.dispatch` hands every incident update to each configured provider; this one turns the first
INVESTIGATING update into the *detection* annotation, MITIGATING into *mitigation* and RESOLVED into
*resolution* (each once per incident: the incident's communications log is the history). It needs
approval like PagerDuty (`apply_changes`); a dry run shows the exact request with the token as
`$GRAFANA_TOKEN (sha256:...)`. Configured by the environment: GRAFANA_URL, the token in the variable
named by $GRAFANA_TOKEN_ENV (default GRAFANA_TOKEN), GRAFANA_DASHBOARD_UID (default mistral-integration).
The moment annotated is the incident's own (detection: the alert's start or the first run, from
incident.json), else the update's time.
"""

from __future__ import annotations

import time
from typing import Any

from .._time import iso_z
from ..notify.base import Configured, Delivery, Update, backoff, env_name, secret, secret_shown, sent_before, setting, tls
from ..redact import scrub
from . import DEFAULT_TOKEN_ENV
from .annotations import GrafanaTarget, annotation_body, delete_command, incident_events
from .dashboard import DASHBOARD_UID

NAME = "grafana"
URL_ENV, TOKEN_ENV_ENV, UID_ENV = "GRAFANA_URL", "GRAFANA_TOKEN_ENV", "GRAFANA_DASHBOARD_UID"
EVENT_OF_STATUS = {"INVESTIGATING": "detection", "MITIGATING": "mitigation", "RESOLVED": "resolution"}
ATTEMPTS = 3


class GrafanaAnnotations:
    """One annotation per incident moment on the Mistral dashboard."""

    name = NAME
    needs_approval = True

    def __init__(self) -> None:
        self.token_env = env_name(TOKEN_ENV_ENV, DEFAULT_TOKEN_ENV)

    def _target(self) -> GrafanaTarget:
        return GrafanaTarget(url=setting(URL_ENV).rstrip("/"), dashboard_uid=setting(UID_ENV, DASHBOARD_UID),
                             token_env=self.token_env)

    def configured(self) -> Configured:
        token = secret(self.token_env)
        url = setting(URL_ENV)
        missing = ([] if url else [URL_ENV]) + ([] if token.present else [self.token_env])
        return Configured(not missing, {URL_ENV: url or "(unset)", self.token_env: str(token).split(": ", 1)[-1],
                                        UID_ENV: setting(UID_ENV, DASHBOARD_UID)}, missing)

    def plan(self, update: Update, history: list[dict[str, Any]]) -> list[Delivery]:
        event = EVENT_OF_STATUS.get(update.status)
        done = {e.get("action") for e in sent_before(history, NAME)}
        if event is None or f"annotate {event}" in done:
            return []
        target = self._target()
        when = _incident_time(update.record, event) or iso_z(timespec="milliseconds")
        facts = update.facts or {}
        what = " ".join(x for x in (update.level, update.error_class) if x)
        text = scrub(f"Incident {update.incident_id} {event}" + (f" ({what})" if what else "")
                     + "".join(f"; {k}: {facts[k]}" for k in ("impact", "action") if facts.get(k)))[:2000]
        body = annotation_body(target, update.incident_id, event, when, text)
        headers = {"Authorization": f"Bearer {secret_shown(secret(self.token_env))}", "Content-Type": "application/json"}
        return [Delivery(NAME, f"annotate {event}", "POST", f"{target.url}/api/annotations", headers, body,
                         note=f"dashboard {target.dashboard_uid}, at {when}")]

    def send(self, delivery: Delivery, timeout_s: float) -> Delivery:
        """POST it (429 and 5xx retried, bounded); the annotation id and its undo kept in `response`."""
        import httpx

        token = secret(self.token_env)
        if not token.present:
            delivery.error = f"${self.token_env} is not set"
            return delivery
        delivery.sent = True
        for attempt in range(1, ATTEMPTS + 1):
            delivery.attempts = attempt
            try:
                r = httpx.post(delivery.url, json=delivery.body, timeout=timeout_s, verify=tls(),
                               headers={"Authorization": f"Bearer {token.reveal()}"})
            except httpx.HTTPError as exc:
                delivery.ok, delivery.error = False, f"unreachable: {type(exc).__name__}"
                return delivery
            delivery.http_status = r.status_code
            if (r.status_code == 429 or r.status_code >= 500) and attempt < ATTEMPTS:
                time.sleep(backoff(attempt, 0.5, r.headers.get("Retry-After")))
                continue
            break
        answer = _json(r)
        delivery.ok = r.status_code == 200 and isinstance(answer.get("id"), int)
        if delivery.ok:
            delivery.response = {"id": answer["id"], "undo": delete_command(self._target(), answer["id"])}
        else:
            delivery.error = scrub(f"HTTP {r.status_code}: {str(answer.get('message') or r.text)[:200]}")
        return delivery

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        """`GET /api/user` with the token (changes nothing): reachable and the token accepted, as whom."""
        import httpx

        url = setting(URL_ENV).rstrip("/")
        try:
            r = httpx.get(f"{url}/api/user", timeout=timeout_s, verify=tls(),
                          headers={"Authorization": f"Bearer {secret(self.token_env).reveal()}"})
        except httpx.HTTPError as exc:
            return False, f"unreachable: {type(exc).__name__}"
        if r.status_code == 200:
            return True, f"token accepted (as {str(_json(r).get('login', ''))[:60]!r})"
        return False, f"GET /api/user answered HTTP {r.status_code}"


def _incident_time(record: str, event: str) -> str | None:
    """The moment the incident record gives for `event` (detection: the alert's start or the first run)."""
    if not record:
        return None
    from ..records.incident import read_index

    try:
        index = read_index(record)
    except (OSError, ValueError):
        return None
    return (incident_events(index).get(event) or {}).get("time") if index else None


def _json(r: Any) -> dict[str, Any]:
    try:
        value = r.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
