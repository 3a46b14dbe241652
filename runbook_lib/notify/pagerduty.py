"""PagerDuty Events API v2: the incident's alert triggered, acknowledged and resolved, dedup_key = incident id.

Library: the official `pagerduty` package (PagerDuty's own, the maintained successor of pdpyras;
7.x, released 2026): `EventsApiV2Client.send_event` posts to `/v2/enqueue` with the routing key put
into the body by the client, validates the 2xx answer and returns the dedup_key, and its retry loop
(`retry[status] = n`, exponential `sleep_timer`) is the documented way to wait out 429 and 5xx. We
bound that loop (by default the package retries 429 without limit) and build the event ourselves,
so the dry run shows the very body `send_event` will post (`send_event(action, dedup_key, **rest)`
posts `{"event_action": action, "dedup_key": ..., **rest, "routing_key": key}`).

What is sent, per the incident's updates (only with approval, `apply_changes=True`):
- the first update: `trigger` with `payload.summary` (<= 1024 characters), `source`, `severity`
  from the incident's level (P1 critical, P2 error, P3 warning, P4 info), `custom_details` = the
  verdict facts, `links` to the record when `$RUNBOOK_RECORD_URL` says where records are served;
- a later update whose severity or status changed: `trigger` again with the same dedup_key (PagerDuty
  adds it to the open alert's log), its `custom_details.note` saying what changed and why;
- with a REST API token configured, each such change is also written as a note on the incident
  PagerDuty opened for the alert (`POST /incidents/{id}/notes`, the incident found by its
  `incident_key` = our dedup_key, through the same package's `RestApiV2Client`);
- MITIGATING: `acknowledge` (someone approved a mitigation: stop escalating);
- RESOLVED: `resolve`, once an alert was triggered by these runbooks.

The package is the `[pagerduty]` extra: without it a configured PagerDuty gets no event, and the
delivery (and `runbook doctor`) says which package to install. Configuration (environment only): `PAGERDUTY_ROUTING_KEY` (an Events API v2 integration key, 32
characters; a team that names it differently sets `RUNBOOK_PAGERDUTY_KEY_ENV` to that NAME),
`PAGERDUTY_EVENTS_URL` (default https://events.pagerduty.com; the EU service region is
https://events.eu.pagerduty.com), `PAGERDUTY_SOURCE` (payload.source, default mistral-runbooks);
for the notes `PAGERDUTY_API_TOKEN` (`RUNBOOK_PAGERDUTY_TOKEN_ENV` names another variable),
`PAGERDUTY_FROM` (a PagerDuty user's email) and `PAGERDUTY_API_URL` (default https://api.pagerduty.com).
"""

from __future__ import annotations

import importlib.util
import json
import math
from typing import Any

from .base import Configured, Delivery, Update, env_name, secret, secret_shown, sent_before, setting, tls

NAME = "pagerduty"
KEY_ENV_DEFAULT = "PAGERDUTY_ROUTING_KEY"
KEY_ENV_OVERRIDE = "RUNBOOK_PAGERDUTY_KEY_ENV"
URL_ENV = "PAGERDUTY_EVENTS_URL"
SOURCE_ENV = "PAGERDUTY_SOURCE"
DEFAULT_URL = "https://events.pagerduty.com"
SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
SUMMARY_MAX = 1024
DEDUP_MAX = 255
EVENT_MAX_BYTES = 512 * 1024
ROUTING_KEY_LEN = 32
TOKEN_ENV_DEFAULT = "PAGERDUTY_API_TOKEN"  # REST API v2 token, only for incident notes
TOKEN_ENV_OVERRIDE = "RUNBOOK_PAGERDUTY_TOKEN_ENV"
FROM_ENV = "PAGERDUTY_FROM"  # the email of the PagerDuty user the notes are written as (REST `From` header)
API_URL_ENV = "PAGERDUTY_API_URL"
DEFAULT_API_URL = "https://api.pagerduty.com"
NOTE_MAX = 25_000
MISSING = "the pagerduty package is not installed: pip install 'mistral-runbooks[pagerduty]'"


class PagerDuty:
    """Events API v2 through the official client, bounded: `max_retries` per status, backoff from `backoff_s`."""

    name = NAME
    needs_approval = True

    def __init__(self, *, max_retries: int = 3, backoff_s: float = 1.0) -> None:
        self.max_retries, self.backoff_s = max_retries, backoff_s

    @property
    def key_env(self) -> str:
        return env_name(KEY_ENV_OVERRIDE, KEY_ENV_DEFAULT)

    @property
    def base_url(self) -> str:
        return setting(URL_ENV, DEFAULT_URL).rstrip("/")

    def configured(self) -> Configured:
        key = secret(self.key_env)
        shown = {self.key_env: str(key).split(": ", 1)[-1], URL_ENV: self.base_url}
        token = secret(self.token_env)
        if token.present or setting(FROM_ENV):  # incident notes (optional)
            shown.update({self.token_env: str(token).split(": ", 1)[-1], FROM_ENV: setting(FROM_ENV) or "(unset)"})
        return Configured(key.present, shown, [] if key.present else [self.key_env])

    # -- planning ----------------------------------------------------------------------------------------
    def plan(self, update: Update, history: list[dict[str, Any]]) -> list[Delivery]:
        dedup = update.incident_id
        if not dedup or len(dedup) > DEDUP_MAX:
            return [self._delivery("trigger", {}, error="no incident id: the alert's dedup_key is the incident id")]
        alert = _alert_state(sent_before(history, NAME))
        if update.status == "RESOLVED":
            if not alert["open"]:
                return []
            return [self._delivery("resolve", {"event_action": "resolve", "dedup_key": dedup},
                                   note="the incident is resolved")]
        out = []
        changed = _what_changed(alert, update)
        if changed is not None:
            out.append(self._delivery("trigger", self._trigger_body(update, changed), note=changed or "first update"))
        if changed and self.notes_configured():
            out.append(self._note(update, changed))
        if update.status == "MITIGATING" and not alert["acknowledged"]:
            out.append(self._delivery("acknowledge", {"event_action": "acknowledge", "dedup_key": dedup},
                                      note="a mitigation is under way"))
        return out

    def _trigger_body(self, update: Update, note: str) -> dict[str, Any]:
        level = update.level if update.level in SEVERITY else "P1"
        summary = f"{level} {update.title}: {update.status} ({update.error_class}) - {update.facts.get('impact', '')}"
        details = {"incident_id": update.incident_id, "status": update.status, "level": level,
                   "error_class": update.error_class, "by": update.by, "record": update.record,
                   **{k: v for k, v in update.facts.items() if v not in (None, "", [])}}
        if note:
            details["note"] = note
        body: dict[str, Any] = {
            "event_action": "trigger", "dedup_key": update.incident_id,
            "payload": {"summary": _cut(summary.rstrip(" -"), SUMMARY_MAX), "source": setting(SOURCE_ENV, "mistral-runbooks"),
                        "severity": SEVERITY[level], "component": "mistral-api", "class": update.error_class,
                        "custom_details": details},
            "client": "mistral-runbooks"}
        link = update.record_link()
        if link:
            body["client_url"] = link
            body["links"] = [{"href": link, "text": f"Incident record {update.incident_id}"}]
        return _fit(body)

    # -- incident notes (REST API v2, optional) ------------------------------------------------------------
    @property
    def token_env(self) -> str:
        return env_name(TOKEN_ENV_OVERRIDE, TOKEN_ENV_DEFAULT)

    def notes_configured(self) -> bool:
        return secret(self.token_env).present and bool(setting(FROM_ENV))

    def _note(self, update: Update, changed: str) -> Delivery:
        """POST /incidents/{id}/notes on the incident PagerDuty opened for our dedup_key (its incident_key)."""
        api = setting(API_URL_ENV, DEFAULT_API_URL).rstrip("/")
        content = _cut(f"{update.incident_id} {update.status} {update.level}: {changed} (mistral-runbooks, {update.by})"
                       + (f" {update.record_link()}" if update.record_link() else ""), NOTE_MAX)
        headers = {"Authorization": f"Token token={secret_shown(secret(self.token_env))}", "From": setting(FROM_ENV),
                   "Accept": "application/vnd.pagerduty+json;version=2", "Content-Type": "application/json"}
        return Delivery(NAME, "note", "POST", f"{api}/incidents/{{incident}}/notes", headers,
                        {"note": {"content": content}}, note=changed,
                        lookup={"incident": f"GET {api}/incidents?incident_key={update.incident_id}"},
                        credential={"env": self.token_env, "header": "Authorization", "prefix": "Token token="})

    def _send_note(self, delivery: Delivery, timeout_s: float, pagerduty: Any) -> Delivery:
        token = secret(self.token_env)
        attempts: list[int] = []
        api = setting(API_URL_ENV, DEFAULT_API_URL).rstrip("/")
        client = pagerduty.RestApiV2Client(token.reveal() or "", default_from=setting(FROM_ENV), base_url=api,
                                           verify=tls(), event_hooks={"request": [lambda request: attempts.append(1)]})
        self._bound(client, timeout_s, delivery.time_left())
        key = delivery.lookup["incident"].rsplit("incident_key=", 1)[-1]
        delivery.sent = True
        try:
            found = client.rget("/incidents", params={"incident_key": key})
            if not found:
                delivery.ok, delivery.error = False, f"no PagerDuty incident has incident_key {key} (yet): note not added"
            else:
                incident = found[0]["id"]
                delivery.url = delivery.url.replace("{incident}", incident)
                made = client.rpost(f"/incidents/{incident}/notes", json=delivery.body)
                delivery.ok, delivery.http_status = True, 201
                delivery.response = {"incident": incident, "note": (made or {}).get("id")}
        except pagerduty.HttpError as exc:
            delivery.ok, delivery.http_status, delivery.error = False, exc.response.status_code, _refusal(exc.response)
        except pagerduty.Error as exc:
            delivery.ok, delivery.error = False, f"not delivered: {type(exc.__cause__ or exc).__name__}"
        finally:
            client.close()
        delivery.attempts = len(attempts)
        return delivery

    def _delivery(self, action: str, body: dict[str, Any], *, note: str = "", error: str | None = None) -> Delivery:
        key = secret(self.key_env)
        shown = {**body, "routing_key": secret_shown(key)} if body else {}
        return Delivery(NAME, action, "POST", f"{self.base_url}/v2/enqueue", {"Content-Type": "application/json"},
                        shown, note=note, error=error, credential={"env": self.key_env, "field": "routing_key"})

    # -- sending ----------------------------------------------------------------------------------------
    def send(self, delivery: Delivery, timeout_s: float) -> Delivery:
        """POST the event through `pagerduty.EventsApiV2Client`; the outcome (never the key) on the delivery."""
        try:
            import pagerduty
        except ImportError:
            delivery.error = MISSING
            return delivery
        if delivery.action == "note":
            return self._send_note(delivery, timeout_s, pagerduty)
        key = secret(self.key_env)
        if not key.present:
            delivery.error = f"${self.key_env} is not set"
            return delivery
        attempts: list[int] = []
        client = pagerduty.EventsApiV2Client(key.reveal() or "", base_url=self.base_url, verify=tls(),
                                             event_hooks={"request": [lambda request: attempts.append(1)]})
        self._bound(client, timeout_s, delivery.time_left())
        rest = {k: v for k, v in delivery.body.items() if k not in ("event_action", "dedup_key", "routing_key")}
        delivery.sent = True
        try:
            dedup = client.send_event(delivery.body["event_action"], dedup_key=delivery.body.get("dedup_key"), **rest)
            delivery.ok, delivery.http_status, delivery.response = True, 202, {"dedup_key": dedup}
        except pagerduty.HttpError as exc:
            delivery.ok, delivery.http_status = False, exc.response.status_code
            delivery.error = _refusal(exc.response)
        except pagerduty.Error as exc:  # network: the message names the URL (no key in it), not the key
            delivery.ok, delivery.error = False, f"not delivered: {type(exc.__cause__ or exc).__name__}"
        finally:
            client.close()
        delivery.attempts = len(attempts)
        return delivery

    def _bound(self, client: Any, timeout_s: float, left_s: float = float("inf")) -> None:
        """Every retry bounded: 429 and 5xx at most `max_retries` times, exponential from `backoff_s`, and
        only as many as the waits (backoff_s * (2^n - 1) in all) fit in the `left_s` seconds left."""
        fit = int(math.log2(left_s / self.backoff_s + 1)) if math.isfinite(left_s) and left_s > 0 else self.max_retries
        retries = max(0, min(self.max_retries, fit))
        client.timeout = timeout_s
        # the package retries a 429 without limit when retry[429] is 0; max_http_attempts = n - 1 stops it
        # after n retries in all (none when n = 0), retry[status] >= 1 keeps every status on that path
        client.retry = {status: max(1, retries) for status in (429, 500, 502, 503, 504)}
        client.max_http_attempts = retries - 1
        client.max_network_attempts = 1
        client.sleep_timer = self.backoff_s / client.sleep_timer_base  # the first wait is backoff_s

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        """Reachability only (the Events API has no read endpoint to check a key without sending an event)."""
        import httpx

        if importlib.util.find_spec("pagerduty") is None:
            return False, MISSING
        key = secret(self.key_env)
        form = ("routing key is 32 characters" if key.length == ROUTING_KEY_LEN else
                f"routing key is {key.length} characters, Events API v2 keys are {ROUTING_KEY_LEN}")
        try:
            r = httpx.get(f"{self.base_url}/v2/enqueue", timeout=timeout_s, verify=tls())
        except httpx.HTTPError as exc:
            return False, f"unreachable: {type(exc).__name__}; {form}"
        ok, detail = key.length == ROUTING_KEY_LEN, f"reachable (HTTP {r.status_code}, key not checked: sending is the only check); {form}"
        if self.notes_configured():
            notes_ok, notes = self._probe_rest(timeout_s)
            ok, detail = ok and notes_ok, f"{detail}; notes: {notes}"
        return ok, detail

    def _probe_rest(self, timeout_s: float) -> tuple[bool, str]:
        """`GET /abilities`: the REST token is accepted (any token may read it; nothing changes)."""
        import httpx

        api = setting(API_URL_ENV, DEFAULT_API_URL).rstrip("/")
        try:
            r = httpx.get(f"{api}/abilities", timeout=timeout_s, verify=tls(),
                          headers={"Authorization": f"Token token={secret(self.token_env).reveal()}",
                                   "Accept": "application/vnd.pagerduty+json;version=2"})
        except httpx.HTTPError as exc:
            return False, f"REST API unreachable: {type(exc).__name__}"
        return r.is_success, f"REST API token {'accepted' if r.is_success else f'refused (HTTP {r.status_code})'}"


def _alert_state(sent: list[dict[str, Any]]) -> dict[str, Any]:
    """From the earlier sent events: is an alert open, at which level and status, acknowledged?"""
    state: dict[str, Any] = {"open": False, "acknowledged": False, "severity": None, "status": None}
    for e in sent:
        if e.get("action") == "trigger":
            state.update(open=True, severity=e.get("severity"), status=e.get("status"))
        elif e.get("action") == "acknowledge":
            state["acknowledged"] = True
        elif e.get("action") == "resolve":
            state.update(open=False, acknowledged=False, severity=None, status=None)
    return state


def _what_changed(alert: dict[str, Any], update: Update) -> str | None:
    """None when the open alert already says this; "" for a first trigger; else what changed (and why)."""
    if not alert["open"]:
        return ""
    notes = []
    if alert["severity"] != (update.level or None):
        notes.append(f"severity {alert['severity']} -> {update.level}"
                     + (f": {update.severity_note}" if update.severity_note else ""))
    if alert["status"] != update.status:
        notes.append(f"status {alert['status']} -> {update.status}: {update.facts.get('action', '')}".rstrip(": "))
    return "; ".join(notes) or None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(body: dict[str, Any]) -> dict[str, Any]:
    """Keep the event under the documented 512 KB: the largest custom details are shortened first."""
    details = body["payload"]["custom_details"]
    while len(json.dumps(body).encode()) > EVENT_MAX_BYTES - 200 and details:
        largest = max(details, key=lambda k: len(json.dumps(details[k])))
        text = json.dumps(details[largest])
        details[largest] = text[: max(0, len(text) // 2)] + "… (shortened to fit 512 KB)"
        if len(text) < 64:
            details.pop(largest)
    return body


def _refusal(response: Any) -> str:
    """The API's own words for a refusal (`errors`; the REST API nests them in `error`), never the request."""
    try:
        data = response.json()
    except ValueError:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("error"), dict):  # REST API v2
        data = {"errors": data["error"].get("errors") or [data["error"].get("message", "")]}
    errors = data.get("errors") if isinstance(data, dict) else None
    words = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(data.get("message", "")) if isinstance(data, dict) else ""
    return f"PagerDuty answered HTTP {response.status_code}" + (f": {words[:300]}" if words else "")


__all__ = ["PagerDuty", "SEVERITY"]
