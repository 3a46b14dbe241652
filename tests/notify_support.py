"""Local stand-ins for the PagerDuty Events API v2, the Slack Web API (and an incoming webhook) and the
Atlassian Statuspage API, over real HTTP (aiohttp), strict where the real services are strict.

Each validates what the documentation says the service validates and answers as it answers:
- Events API v2 (`POST /v2/enqueue`): routing_key 32 characters, event_action trigger/acknowledge/
  resolve, dedup_key <= 255 (required but for trigger), payload.summary 1-1024, payload.source,
  payload.severity critical/error/warning/info, links/images shapes, the whole event <= 512 KB;
  202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`, 400 `{"status":
  "invalid event", "message": "Event object is invalid", "errors": [...]}`, 429 when told to throttle;
- PagerDuty REST API v2 (`GET /incidents?incident_key=`, `POST /incidents/{id}/notes`): `Authorization:
  Token token=<token>`, the v2 Accept header, a `From` email on writes (400 otherwise); an incident per
  triggered alert, as PagerDuty opens one, with incident_key = the event's dedup_key;
- Slack (`/api/auth.test`, `/api/chat.postMessage`, `/api/chat.update`): HTTP 200 with `ok: false`
  and Slack's error codes (`not_authed`, `invalid_auth`, `channel_not_found`, `invalid_blocks`,
  `thread_not_found`, `message_not_found`), a `ts` per message; a webhook answering 400 `no_text`;
- Statuspage (`/v1/pages/{page}`, `/v1/pages/{page}/incidents[/{id}]`): `Authorization: OAuth <key>`
  (401 otherwise), the page id (404), `incident[status]` and component statuses from the enums (422).
Every request is kept (`Fakes.seen`) for the tests to inspect. Served over HTTPS (the official
pagerduty client refuses anything else), with a throwaway CA the clients trust through SSL_CERT_FILE.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import tempfile
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tls_support import TestCA

PD_KEY = "R0UT1NGKEY5ECRETVALUE0123456789"[:31] + "Q"  # 32 characters
PD_API_TOKEN = "u+PDRESTSECRETTOKEN_abc123"
SLACK_TOKEN = "xoxb-111-222-SECRETTOKENVALUEabc"
SLACK_CHANNEL = "C0INCIDENTS"
WEBHOOK_PATH = "/services/T000/B000/WEBHOOKSECRETPATH42"
SP_KEY = "statuspage-oauth-SECRET-7f3a9c"
SP_PAGE = "pg1abc"
SP_COMPONENTS = ("cmpapi01", "cmpchat02")
PD_SEVERITIES = ("critical", "error", "warning", "info")
FAKES: web.AppKey["Fakes"] = web.AppKey("fakes")
BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text", "input", "file", "video"}


@dataclass
class Fakes:
    base: str = ""
    ca: str = ""  # the CA that signed the server's certificate (SSL_CERT_FILE for the clients)
    seen: list[dict[str, Any]] = field(default_factory=list)
    throttle: dict[str, int] = field(default_factory=dict)  # service -> how many next requests get 429/420
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # Slack ts -> message
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # Statuspage id -> incident
    pd_incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # PagerDuty incident_key -> incident
    retry_after: str = "0"  # what throttled answers say in Retry-After
    _ts: Any = field(default_factory=lambda: itertools.count(100))

    def reset(self) -> None:
        self.seen.clear(), self.throttle.clear(), self.messages.clear(), self.incidents.clear()
        self.pd_incidents.clear()
        self.retry_after = "0"

    def of(self, service: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["service"] == service]

    def _throttled(self, service: str) -> bool:
        if self.throttle.get(service, 0) > 0:
            self.throttle[service] -= 1
            return True
        return False


# -- PagerDuty ---------------------------------------------------------------------------------------------
def pd_errors(event: Any, size: int) -> list[str]:
    """The Events API v2's checks, in its words where it documents them."""
    if size > 512 * 1024:
        return ["Event object is too large (over 512 KB)"]
    if not isinstance(event, dict):
        return ["Event object is invalid"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255 or not dedup):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append("'dedup_key' is missing and is required for this event_action")
    if action == "trigger":
        errors.extend(_pd_payload_errors(event.get("payload")))
    for link in event.get("links") or []:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            errors.append("'links' entries need an 'href'")
    if "links" in event and not isinstance(event["links"], list):
        errors.append("'links' must be an array")
    return errors


def _pd_payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) > 1024:
        errors.append("'payload.summary' is missing or longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing")
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
    if "custom_details" in payload and not isinstance(payload["custom_details"], (dict, str)):
        errors.append("'payload.custom_details' must be an object")
    return errors


async def _pd_enqueue(request: web.Request) -> web.Response:
    fakes: Fakes = request.app[FAKES]
    raw = await request.read()
    try:
        event = json.loads(raw)
    except ValueError:
        event = None
    fakes.seen.append({"service": "pagerduty", "path": request.path, "headers": dict(request.headers),
                       "body": event, "raw": raw.decode("utf-8", "replace")})
    if fakes._throttled("pagerduty"):
        return web.json_response({"status": "throttle event", "message": "Requests for this service are arriving "
                                  "too quickly. Please retry later."}, status=429)
    errors = pd_errors(event, len(raw))
    if errors:
        return web.json_response({"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                                 status=400)
    dedup = event.get("dedup_key") or f"generated-{len(fakes.seen)}"
    _pd_incident(fakes, event["event_action"], dedup)
    return web.json_response({"status": "success", "message": "Event processed", "dedup_key": dedup}, status=202)


def _pd_incident(fakes: Fakes, action: str, key: str) -> None:
    """What PagerDuty does with an accepted event: an incident per open alert, incident_key = dedup_key."""
    incident = fakes.pd_incidents.get(key)
    if action == "trigger" and (incident is None or incident["status"] == "resolved"):
        fakes.pd_incidents[key] = {"id": f"PINC{len(fakes.pd_incidents) + 1:03d}", "incident_key": key,
                                   "status": "triggered", "notes": []}
    elif incident is not None and incident["status"] != "resolved" and action in ("acknowledge", "resolve"):
        incident["status"] = "acknowledged" if action == "acknowledge" else "resolved"


async def _pd_rest(request: web.Request) -> web.Response:
    """REST API v2: GET /incidents?incident_key=, POST /incidents/{id}/notes (Token auth, From for writes)."""
    fakes: Fakes = request.app[FAKES]
    body = await request.json() if request.can_read_body else None
    fakes.seen.append({"service": "pagerduty_rest", "method": request.method, "path": request.path,
                       "query": dict(request.query), "headers": dict(request.headers), "body": body})
    if request.headers.get("Authorization") != f"Token token={PD_API_TOKEN}":
        return web.json_response({"error": {"message": "Unauthorized", "code": 2006}}, status=401)
    if "version=2" not in request.headers.get("Accept", ""):
        return web.json_response({"error": {"message": "Not Acceptable"}}, status=406)
    if request.path == "/abilities":
        return web.json_response({"abilities": ["teams", "read_only_users"]})
    if request.method == "GET":
        key = request.query.get("incident_key")
        found = [i for i in fakes.pd_incidents.values() if key is None or i["incident_key"] == key]
        return web.json_response({"incidents": [{k: v for k, v in i.items() if k != "notes"} for i in found],
                                  "limit": 25, "offset": 0, "more": False, "total": None})
    incident = next((i for i in fakes.pd_incidents.values() if i["id"] == request.match_info["id"]), None)
    if incident is None:
        return web.json_response({"error": {"message": "Not Found", "code": 2100}}, status=404)
    if "@" not in request.headers.get("From", ""):
        return web.json_response({"error": {"message": "Invalid Input Provided", "code": 2001,
                                            "errors": ["A valid 'From' header is required"]}}, status=400)
    content = ((body or {}).get("note") or {}).get("content")
    if not isinstance(content, str) or not 1 <= len(content) <= 25_000:
        return web.json_response({"error": {"message": "Invalid Input Provided", "code": 2001,
                                            "errors": ["Note content must be 1-25000 characters"]}}, status=400)
    note = {"id": f"PNOTE{len(incident['notes']) + 1}", "content": content, "user": {"summary": request.headers["From"]}}
    incident["notes"].append(note)
    return web.json_response({"note": note}, status=201)


# -- Slack -------------------------------------------------------------------------------------------------
def blocks_error(blocks: Any) -> str | None:
    """Block Kit basics Slack checks (else `invalid_blocks`)."""
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return "blocks must be a list of 1-50"
    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind not in BLOCK_TYPES:
            return f"unknown block type {kind!r}"
        text = b.get("text") or {}
        if kind == "header" and (text.get("type") != "plain_text" or not 1 <= len(text.get("text", "")) <= 150):
            return "header needs plain_text of 1-150 characters"
        if kind == "section" and (text.get("type") not in ("mrkdwn", "plain_text")
                                  or not 1 <= len(text.get("text", "")) <= 3000):
            return "section text must be mrkdwn/plain_text of 1-3000 characters"
        if kind == "context" and not 1 <= len(b.get("elements") or []) <= 10:
            return "context needs 1-10 elements"
    return None


async def _slack(request: web.Request) -> web.Response:
    fakes: Fakes = request.app[FAKES]
    method = request.match_info["method"]
    body = await _slack_body(request)
    fakes.seen.append({"service": "slack", "method": method, "headers": dict(request.headers), "body": body})
    if fakes._throttled("slack"):
        return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                 headers={"Retry-After": fakes.retry_after})
    auth = request.headers.get("Authorization", "")
    if not auth:
        return web.json_response({"ok": False, "error": "not_authed"})
    if auth != f"Bearer {SLACK_TOKEN}":
        return web.json_response({"ok": False, "error": "invalid_auth"})
    if method == "auth.test":
        return web.json_response({"ok": True, "team": "Incident Team", "user": "runbook-bot", "team_id": "T000"})
    return web.json_response(_slack_message(fakes, method, body))


async def _slack_body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await request.json() if request.can_read_body else {}
    form = dict(await request.post())
    if isinstance(form.get("blocks"), str):
        form["blocks"] = json.loads(form["blocks"])
    return form


def _slack_message(fakes: Fakes, method: str, body: dict[str, Any]) -> dict[str, Any]:
    if method not in ("chat.postMessage", "chat.update"):
        return {"ok": False, "error": "unknown_method"}
    if body.get("channel") != SLACK_CHANNEL:
        return {"ok": False, "error": "channel_not_found"}
    if not body.get("text") and not body.get("blocks"):
        return {"ok": False, "error": "no_text"}
    if "blocks" in body and (why := blocks_error(body["blocks"])):
        return {"ok": False, "error": "invalid_blocks", "errors": [why]}
    if method == "chat.update":
        if body.get("ts") not in fakes.messages:
            return {"ok": False, "error": "message_not_found"}
        fakes.messages[body["ts"]].update(text=body.get("text"), blocks=body.get("blocks"), edited=True)
        return {"ok": True, "channel": SLACK_CHANNEL, "ts": body["ts"], "text": body.get("text")}
    if body.get("thread_ts") and body["thread_ts"] not in fakes.messages:
        return {"ok": False, "error": "thread_not_found"}
    ts = f"1733390000.{next(fakes._ts):06d}"
    fakes.messages[ts] = {"text": body.get("text"), "blocks": body.get("blocks"), "thread_ts": body.get("thread_ts"),
                          "reply_broadcast": body.get("reply_broadcast", False)}
    return {"ok": True, "channel": SLACK_CHANNEL, "ts": ts, "message": {"text": body.get("text"), "ts": ts}}


async def _webhook(request: web.Request) -> web.Response:
    fakes: Fakes = request.app[FAKES]
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    fakes.seen.append({"service": "webhook", "headers": dict(request.headers), "body": body})
    if not isinstance(body, dict):
        return web.Response(status=400, text="invalid_payload")
    if not body.get("text") and not body.get("blocks"):
        return web.Response(status=400, text="no_text")
    if "blocks" in body and blocks_error(body["blocks"]):
        return web.Response(status=400, text="invalid_blocks")
    return web.Response(text="ok")


# -- Statuspage --------------------------------------------------------------------------------------------
SP_STATUSES = ("investigating", "identified", "monitoring", "resolved")
SP_COMPONENT_STATUSES = ("operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage")
SP_IMPACTS = ("none", "minor", "major", "critical")


async def _statuspage(request: web.Request) -> web.Response:
    fakes: Fakes = request.app[FAKES]
    body = await request.json() if request.can_read_body else None
    fakes.seen.append({"service": "statuspage", "method": request.method, "path": request.path,
                       "headers": dict(request.headers), "body": body})
    if fakes._throttled("statuspage"):
        return web.json_response({"error": "Rate limit exceeded"}, status=420,
                                 headers={"Retry-After": fakes.retry_after})
    if request.headers.get("Authorization") != f"OAuth {SP_KEY}":
        return web.json_response({"error": "Could not authenticate"}, status=401)
    if request.match_info["page"] != SP_PAGE:
        return web.json_response({"error": "Page not found"}, status=404)
    if request.method == "GET" and "incident" not in request.match_info:
        return web.json_response({"id": SP_PAGE, "name": "Example status"})
    incident = (body or {}).get("incident") if isinstance(body, dict) else None
    why = _sp_errors(incident, create=request.method == "POST")
    if why:
        return web.json_response({"error": why}, status=422)
    if request.method == "POST":
        sid = f"inc{len(fakes.incidents) + 1:04d}"
        fakes.incidents[sid] = {"id": sid, **incident, "shortlink": f"https://stspg.io/{sid}", "updates": 1}
        return web.json_response(fakes.incidents[sid], status=201)
    sid = request.match_info["incident"]
    if sid not in fakes.incidents:
        return web.json_response({"error": "Incident not found"}, status=404)
    fakes.incidents[sid].update({**incident, "updates": fakes.incidents[sid]["updates"] + 1})
    return web.json_response(fakes.incidents[sid])


def _sp_errors(incident: Any, *, create: bool) -> str | None:
    if not isinstance(incident, dict):
        return "incident is missing"
    if create and not incident.get("name"):
        return "incident[name] can't be blank"
    if "status" in incident and incident["status"] not in SP_STATUSES:
        return f"incident[status] must be one of {', '.join(SP_STATUSES)}"
    if "impact_override" in incident and incident["impact_override"] not in SP_IMPACTS:
        return "incident[impact_override] is invalid"
    for cid, status in (incident.get("components") or {}).items():
        if cid not in SP_COMPONENTS or status not in SP_COMPONENT_STATUSES:
            return f"incident[components][{cid}] is invalid"
    if any(c not in SP_COMPONENTS for c in incident.get("component_ids") or []):
        return "incident[component_ids] names an unknown component"
    return None


# -- the server --------------------------------------------------------------------------------------------
def start() -> tuple[Fakes, Any]:
    """All the fakes on one loopback HTTPS port in a background thread; returns (fakes, stop)."""
    fakes = Fakes()
    ca = TestCA(Path(tempfile.mkdtemp(prefix="notify-ca-")))
    pair = ca.server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pair.cert), str(pair.key))
    fakes.ca = str(ca.cert)
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[FAKES] = fakes
    app.router.add_post("/v2/enqueue", _pd_enqueue)
    app.router.add_get("/incidents", _pd_rest)
    app.router.add_get("/abilities", _pd_rest)
    app.router.add_post("/incidents/{id}/notes", _pd_rest)
    app.router.add_post("/api/{method}", _slack)
    app.router.add_post(WEBHOOK_PATH, _webhook)
    app.router.add_get("/v1/pages/{page}", _statuspage)
    app.router.add_post("/v1/pages/{page}/incidents", _statuspage)
    app.router.add_patch("/v1/pages/{page}/incidents/{incident}", _statuspage)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        holder["runner"] = runner
        fakes.base = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not loop.is_running():
            loop.close()  # else its self-pipe sockets surface as ResourceWarnings in a later test

    return fakes, stop


def configure(monkeypatch: Any, fakes: Fakes, *services: str) -> None:
    """Point the named services' environment at the fakes, with the planted secrets."""
    monkeypatch.setenv("SSL_CERT_FILE", fakes.ca)
    if "pagerduty" in services:
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", PD_KEY)
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", fakes.base)
    if "pagerduty_notes" in services:
        monkeypatch.setenv("PAGERDUTY_API_TOKEN", PD_API_TOKEN)
        monkeypatch.setenv("PAGERDUTY_FROM", "oncall@example.com")
        monkeypatch.setenv("PAGERDUTY_API_URL", fakes.base)
    if "slack" in services:
        monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
        monkeypatch.setenv("SLACK_CHANNEL", SLACK_CHANNEL)
        monkeypatch.setenv("SLACK_API_URL", fakes.base + "/api/")
    if "webhook" in services:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", fakes.base + WEBHOOK_PATH)
    if "statuspage" in services:
        monkeypatch.setenv("STATUSPAGE_API_KEY", SP_KEY)
        monkeypatch.setenv("STATUSPAGE_PAGE_ID", SP_PAGE)
        monkeypatch.setenv("STATUSPAGE_COMPONENT_IDS", ",".join(SP_COMPONENTS))
        monkeypatch.setenv("STATUSPAGE_API_URL", fakes.base + "/v1")


ALL_ENV = ("PAGERDUTY_ROUTING_KEY", "PAGERDUTY_EVENTS_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "SLACK_API_URL",
           "SLACK_WEBHOOK_URL", "STATUSPAGE_API_KEY", "STATUSPAGE_PAGE_ID", "STATUSPAGE_COMPONENT_IDS",
           "STATUSPAGE_API_URL", "RUNBOOK_RECORD_URL", "RUNBOOK_PAGERDUTY_KEY_ENV", "RUNBOOK_SLACK_TOKEN_ENV",
           "RUNBOOK_STATUSPAGE_KEY_ENV", "PAGERDUTY_SOURCE", "PAGERDUTY_API_TOKEN", "PAGERDUTY_FROM",
           "PAGERDUTY_API_URL", "RUNBOOK_PAGERDUTY_TOKEN_ENV")
SECRETS = (PD_KEY, SLACK_TOKEN, WEBHOOK_PATH, SP_KEY, PD_API_TOKEN)


def fixtures() -> tuple[Any, Any]:
    """(fakes, clean_env) pytest fixtures: one server per test module; each test starts unconfigured."""
    import pytest

    @pytest.fixture(scope="module")
    def fakes():
        server, stop = start()
        yield server
        stop()

    @pytest.fixture(autouse=True)
    def clean_env(monkeypatch, fakes):
        for name in ALL_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("RUNBOOK_TEMPLATES", raising=False)
        fakes.reset()

    return fakes, clean_env
