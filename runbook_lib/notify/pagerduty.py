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
- MITIGATING: `acknowledge` (someone approved a mitigation: stop escalating);
- RESOLVED: `resolve`, once an alert was triggered by these runbooks.

The package is the `[pagerduty]` extra: without it a configured PagerDuty gets no event, and the
delivery (and `runbook doctor`) says which package to install. Configuration (environment only): `PAGERDUTY_ROUTING_KEY` (an Events API v2 integration key, 32
characters; a team that names it differently sets `RUNBOOK_PAGERDUTY_KEY_ENV` to that NAME),
`PAGERDUTY_EVENTS_URL` (default https://events.pagerduty.com; the EU service region is
https://events.eu.pagerduty.com), `PAGERDUTY_SOURCE` (payload.source, default mistral-runbooks).
"""

from __future__ import annotations

import importlib.util
import json
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

    def _delivery(self, action: str, body: dict[str, Any], *, note: str = "", error: str | None = None) -> Delivery:
        key = secret(self.key_env)
        shown = {**body, "routing_key": secret_shown(key)} if body else {}
        return Delivery(NAME, action, "POST", f"{self.base_url}/v2/enqueue", {"Content-Type": "application/json"},
                        shown, note=note, error=error)

    # -- sending ----------------------------------------------------------------------------------------
    def send(self, delivery: Delivery, timeout_s: float) -> Delivery:
        """POST the event through `pagerduty.EventsApiV2Client`; the outcome (never the key) on the delivery."""
        try:
            import pagerduty
        except ImportError:
            delivery.error = MISSING
            return delivery
        key = secret(self.key_env)
        if not key.present:
            delivery.error = f"${self.key_env} is not set"
            return delivery
        attempts: list[int] = []
        client = pagerduty.EventsApiV2Client(key.reveal() or "", base_url=self.base_url, verify=tls(),
                                             event_hooks={"request": [lambda request: attempts.append(1)]})
        self._bound(client, timeout_s)
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

    def _bound(self, client: Any, timeout_s: float) -> None:
        """Every retry bounded: 429 and 5xx at most `max_retries` times, exponential from `backoff_s`."""
        client.timeout = timeout_s
        client.retry = {status: self.max_retries for status in (429, 500, 502, 503, 504)}
        client.max_http_attempts = self.max_retries * 2
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
        return key.length == ROUTING_KEY_LEN, f"reachable (HTTP {r.status_code}, key not checked: sending is the only check); {form}"


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
    """The Events API's own words for a refused event (`errors`), never the request (it holds the key)."""
    try:
        data = response.json()
    except ValueError:
        data = {}
    errors = data.get("errors") if isinstance(data, dict) else None
    words = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(data.get("message", "")) if isinstance(data, dict) else ""
    return f"PagerDuty answered HTTP {response.status_code}" + (f": {words[:300]}" if words else "")


__all__ = ["PagerDuty", "SEVERITY"]
