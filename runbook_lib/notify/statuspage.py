"""The public status page: Atlassian Statuspage's REST API (v1), behind the small `notify.base.Provider` interface.

Library: httpx (already the project's HTTP client). Atlassian publishes no maintained Python client
for the Statuspage manage API (the PyPI packages named after it are unofficial and years old), and
the API is four documented JSON calls, so we make them directly:
- create: `POST /v1/pages/{page_id}/incidents` with `{"incident": {"name", "status", "body",
  "impact_override", "component_ids", "components", "deliver_notifications", "metadata"}}`;
- update / resolve: `PATCH /v1/pages/{page_id}/incidents/{incident_id}` (`status` resolved,
  components back to operational);
- component status travels with the incident (`components: {id: status}`, as the API documents), so
  a page's components always say what the incident says;
- every request carries `Authorization: OAuth <api key>`; `incident[status]` is one of
  investigating, identified, monitoring, resolved.
The incident's id comes back from the create and is kept in the incident's `communications` log, so
later runs (the postmortem's RESOLVED) update the same status-page incident.

Posting is public: a dry run unless approved (`apply_changes=True`), the exact request shown with
the key redacted. Rate limits (HTTP 420/429) and 5xx are retried at most `max_retries` times with
exponential backoff (Retry-After honoured, capped); anything else is the delivery's error.

Mapping: INVESTIGATING -> investigating, MITIGATING -> identified, RESOLVED -> resolved; components
P1 major_outage, P2 partial_outage, P3/P4 degraded_performance, RESOLVED operational; impact P1
critical, P2 major, P3 minor, P4 none. Configuration (environment only): `STATUSPAGE_API_KEY`
(`RUNBOOK_STATUSPAGE_KEY_ENV` names another variable), `STATUSPAGE_PAGE_ID`,
`STATUSPAGE_COMPONENT_IDS` (comma-separated, optional), `STATUSPAGE_API_URL` (default
https://api.statuspage.io/v1).
"""

from __future__ import annotations

import time
from typing import Any

from .base import Configured, Delivery, Update, backoff, env_name, secret, secret_shown, sent_before, setting, tls

NAME = "statuspage"
KEY_ENV_DEFAULT = "STATUSPAGE_API_KEY"
KEY_ENV_OVERRIDE = "RUNBOOK_STATUSPAGE_KEY_ENV"
PAGE_ENV = "STATUSPAGE_PAGE_ID"
COMPONENTS_ENV = "STATUSPAGE_COMPONENT_IDS"
URL_ENV = "STATUSPAGE_API_URL"
DEFAULT_URL = "https://api.statuspage.io/v1"
STATUS = {"INVESTIGATING": "investigating", "MITIGATING": "identified", "RESOLVED": "resolved"}
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
COMPONENT = {"P1": "major_outage", "P2": "partial_outage", "P3": "degraded_performance", "P4": "degraded_performance"}
COMPONENT_STATUSES = ("operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage")
IMPACT = {"P1": "critical", "P2": "major", "P3": "minor", "P4": "none"}
RETRY_STATUSES = (420, 429, 500, 502, 503, 504)


class Statuspage:
    """Atlassian Statuspage incidents over httpx; other providers implement the same five members."""

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
        key, page = secret(self.key_env), setting(PAGE_ENV)
        missing = [n for n, ok in ((self.key_env, key.present), (PAGE_ENV, bool(page))) if not ok]
        shown = {self.key_env: str(key).split(": ", 1)[-1], PAGE_ENV: page or "(unset)",
                 COMPONENTS_ENV: setting(COMPONENTS_ENV) or "(none)", URL_ENV: self.base_url}
        return Configured(not missing, shown, missing)

    def plan(self, update: Update, history: list[dict[str, Any]]) -> list[Delivery]:
        page = setting(PAGE_ENV)
        components = [c.strip() for c in setting(COMPONENTS_ENV).split(",") if c.strip()]
        created = next((e for e in reversed(sent_before(history, NAME))
                        if (e.get("response") or {}).get("id")), None)
        if created is not None and (created.get("response") or {}).get("status") == "resolved":
            created = None  # that incident is closed: a new episode is a new incident
        name, _, body = update.external.strip().partition("\n")
        state = STATUS.get(update.status, "investigating")
        level_status = "operational" if state == "resolved" else COMPONENT.get(update.level, "degraded_performance")
        incident: dict[str, Any] = {"status": state, "body": body.strip() or name,
                                    "components": {c: level_status for c in components}}
        if update.level in IMPACT and state != "resolved":
            incident["impact_override"] = IMPACT[update.level]
        if created is None:
            if state == "resolved":
                return []  # nothing was posted: nothing to resolve
            incident = {"name": name.strip()[:255], **incident, "component_ids": components,
                        "deliver_notifications": True, "metadata": {"mistral_runbooks": {"incident_id": update.incident_id}}}
            return [self._delivery("create", "POST", f"/pages/{page}/incidents", {"incident": incident},
                                   "a new status-page incident")]
        sid = created["response"]["id"]
        action = "resolve" if state == "resolved" else "update"
        return [self._delivery(action, "PATCH", f"/pages/{page}/incidents/{sid}", {"incident": incident},
                               f"status-page incident {sid}")]

    def _delivery(self, action: str, method: str, path: str, body: dict[str, Any], note: str) -> Delivery:
        headers = {"Authorization": f"OAuth {secret_shown(secret(self.key_env))}", "Content-Type": "application/json"}
        return Delivery(NAME, action, method, self.base_url + path, headers, body, note=note,
                        credential={"env": self.key_env, "header": "Authorization", "prefix": "OAuth "})

    def send(self, delivery: Delivery, timeout_s: float) -> Delivery:
        import httpx

        key = secret(self.key_env)
        if not key.present:
            delivery.error = f"${self.key_env} is not set"
            return delivery
        headers = {**delivery.headers, "Authorization": f"OAuth {key.reveal()}"}
        delivery.sent = True
        try:
            response = self._with_retries(lambda: httpx.request(delivery.method, delivery.url, headers=headers,
                                                                json=delivery.body, timeout=timeout_s, verify=tls()),
                                         delivery)
        except httpx.HTTPError as exc:
            delivery.ok, delivery.error = False, f"status page unreachable: {type(exc).__name__}"
            return delivery
        delivery.http_status, delivery.ok = response.status_code, response.is_success
        data = _json(response)
        if response.is_success:
            delivery.response = {k: data.get(k) for k in ("id", "status", "shortlink") if k in data}
        else:
            delivery.error = f"Statuspage answered HTTP {response.status_code}: {str(data.get('error') or data)[:200]}"
        return delivery

    def _with_retries(self, call: Any, delivery: Delivery) -> Any:
        """The call, repeated on 420/429/5xx at most `max_retries` times, waiting as `base.backoff` says (never past
        the delivery's deadline)."""
        for attempt in range(1, self.max_retries + 2):
            response = call()
            delivery.attempts = attempt
            wait = backoff(attempt, self.backoff_s, response.headers.get("Retry-After"))
            if response.status_code not in RETRY_STATUSES or attempt > self.max_retries or wait >= delivery.time_left():
                return response
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        """`GET /pages/{page_id}`: the key is accepted and the page exists (changes nothing)."""
        import httpx

        page = setting(PAGE_ENV)
        try:
            r = httpx.get(f"{self.base_url}/pages/{page}", timeout=timeout_s, verify=tls(),
                          headers={"Authorization": f"OAuth {secret(self.key_env).reveal()}"})
        except httpx.HTTPError as exc:
            return False, f"unreachable: {type(exc).__name__}"
        if r.is_success:
            return True, f"page {page} readable ({str(_json(r).get('name', ''))[:60]!r})"
        return False, f"GET /pages/{page} answered HTTP {r.status_code}"


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
