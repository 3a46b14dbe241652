"""A local Mistral API simulator, faithful to /work/shared/reference/mistral-api-facts.md.

Why: the runbooks must be exercised against every failure the real API produces (401, 429 rate
limit vs capacity, 5xx, slow, hang, flaky, refused) without a real key or network. Bodies,
headers and status codes follow the fact sheet; where it is silent, the choices are:

- `GET /v1/models/{id}` for an unknown id: **404** (the error glossary's "bad model id") with the
  2026 gateway envelope used for bad models in chat:
  `{"object":"error","message":"Invalid model: <id>","type":"invalid_model","param":null,
  "code":"1500","raw_status_code":404}`.
- Unknown route: Kong's `404 {"message":"no Route matched with those values","request_id":<32hex>}`,
  answered before auth (route matching precedes the auth plugin). Known route, wrong method:
  FastAPI's `405 {"detail":"Method Not Allowed"}`.
- `server_error` bodies: 500 `{"detail":"Internal Server Error"}` (observed); 502 Kong's
  `{"message":"An invalid response was received from the upstream server","request_id":...}`;
  503 the documented envelope `{"object":"error","message":"Service unavailable",
  "type":"server_error","param":null,"code":null,"raw_status_code":503}`; 504 Kong's
  `{"message":"The upstream server is timing out","request_id":...}`.
- 422 (missing field, wrong type, bad JSON) uses the wrapped form observed in 2025-12:
  `{"object":"error","message":{"detail":[{type,loc,msg,input}]},"type":"invalid_request_error",...}`.
- Rate-limit headers (`x-ratelimit-*`, per-minute fixed windows aligned on the wall-clock minute,
  plus the monthly quota `x-ratelimit-{limit,remaining}-{req,tokens}-month` and
  `x-ratelimit-reset-tokens-month` (seconds to the next UTC month) from this month's totals; the
  monthly limits, 2,000,000 requests and 1,000,000,000 tokens, are our choice: none is published)
  and `mistral-correlation-id` are on every response of a matched `/v1` route, 401 included;
  `x-ratelimit-tokens-query-cost` only on chat completions. No `Retry-After` (none observed).
  The `rate_limited` mode reports `x-ratelimit-limit-req-minute: 0` and remaining 0 (the real
  429 fixture); `capacity_exceeded` keeps the normal non-zero counters, which is how a probe
  tells the two 429s apart. A genuine 429 (window exhausted) keeps the real limit, remaining 0.
- Order of checks on `/v1`: hang / slow latency, then auth (401), then the fault mode, then the
  real per-minute windows, then request validation (422, 400 invalid_model), then the answer.
- `flaky`: each `/v1` request fails with probability `fail_fraction`, half as 503 server_error and
  half as 429 rate_limited (seeded `random.Random`).
- 422 also for values outside the spec's ranges (`temperature` 0-1.5, `top_p` 0-1, `max_tokens`
  >= 0), e.g. `less_than_equal`; this is how the SDK, which forbids unknown fields itself, can be
  made to meet a 422.
- 400 for a conversation the serving layer cannot answer, after the schema (422) and model (400
  `invalid_model`) checks: `messages: []` gets "Conversation must have at least one message", and
  a last message that is not `user`/`tool` (an `assistant` one only with `prefix: true`) gets
  "Expected last role User or Tool (or Assistant with prefix True) for serving but got <role>".
  The spec allows both (no `minItems`; `prefix` defaults to false), so they are not 422s. Body:
  `{"object":"error","message":...,"type":"invalid_request_message_order","param":null,
  "code":"3230"}`, the form seen for the last-role message in 2025-26 (code 3230 reports;
  earlier: type `invalid_request_error`, code null, e.g. smolagents#757, AiNiee#641). The
  empty-list text is from public test suites run against the API (e.g. ai-dial-adapter-openai's
  Mistral deployment: 400 "Conversation must have at least one message"); its envelope is not
  captured and is assumed to be the same validator's.
- Chat request fields accepted: the fact sheet's list plus those SDK 3.7.0 knows (`min_tokens`,
  `repetition_penalty`, `top_k`, `logprobs`, `top_logprobs`, `prompt_logprobs`,
  `top_prompt_logprobs`); anything else is 422 `extra_forbidden`.
- `/feed.rss` imitates status.mistral.ai's Checkly RSS: entering `server_error`/`flaky` publishes
  an "Investigating" update for "Chat API"; leaving it publishes the "Resolved" update.

Stdlib only (plus nothing): importing this module stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from email.utils import format_datetime
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from ._http import NO_RESPONSE, Answer, Request, Response, SimServer, StreamResponse, utc_iso, wait_for_stop_signal

MODES = ("ok", "auth_failure", "rate_limited", "capacity_exceeded", "server_error", "slow", "hang", "flaky")
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
INCIDENT_MODES = frozenset({"server_error", "flaky"})
HANG_MAX_S = 600.0  # the real API's idle-stream timeout; a hang never outlives it
REQUEST_LOG_MAX = 1000

_CAP_KEYS = ("completion_chat", "function_calling", "reasoning", "completion_fim", "fine_tuning", "vision",
             "ocr", "classification", "moderation", "audio", "audio_transcription",
             "audio_transcription_realtime", "audio_speech", "unified_resources")

# One entry per underlying model: its ids (each alias is listed as its own card), and card fields.
_MODEL_GROUPS: list[dict[str, Any]] = [
    {"ids": ["mistral-small-2506", "mistral-small-latest"], "ctx": 131072, "temp": 0.3,
     "caps": {"completion_chat", "function_calling", "vision"},
     "desc": "Our latest enterprise-grade small model with the latest version released June 2025."},
    {"ids": ["mistral-medium-2508", "mistral-medium-latest", "mistral-medium"], "ctx": 131072, "temp": 0.3,
     "caps": {"completion_chat", "function_calling", "vision"},
     "desc": "Our frontier-class multimodal model released August 2025."},
    {"ids": ["mistral-large-2411", "mistral-large-latest"], "ctx": 131072, "temp": 0.7,
     "caps": {"completion_chat", "function_calling"},
     "desc": "Our top-tier reasoning model for high-complexity tasks with the latest version released November 2024."},
    {"ids": ["codestral-2508", "codestral-latest"], "ctx": 256000, "temp": 0.3,
     "caps": {"completion_chat", "function_calling", "completion_fim"},
     "desc": "Our cutting-edge language model for coding released August 2025."},
    {"ids": ["open-mistral-nemo", "open-mistral-nemo-2407"], "ctx": 131072, "temp": 0.3,
     "caps": {"completion_chat", "function_calling", "fine_tuning"},
     "desc": "Our best multilingual open source model released July 2024."},
    {"ids": ["magistral-medium-2509", "magistral-medium-latest"], "ctx": 131072, "temp": 0.7,
     "caps": {"completion_chat", "function_calling", "reasoning", "vision"},
     "desc": "Our frontier-class reasoning model release candidate September 2025."},
    {"ids": ["ministral-8b-2512"], "ctx": 262144, "temp": 0.3,
     "caps": {"completion_chat", "function_calling", "vision"},
     "desc": "Ministral 3 8B: a powerful and efficient small model."},
]
MODEL_IDS: tuple[str, ...] = tuple(i for g in _MODEL_GROUPS for i in g["ids"])
_GROUP_OF = {i: g for g in _MODEL_GROUPS for i in g["ids"]}

CHAT_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
    "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key", "service_tier",
    "safe_prompt",
    # known to the mistralai 3.7.0 SDK's ChatCompletionRequest as well
    "min_tokens", "repetition_penalty", "top_k", "logprobs", "top_logprobs", "prompt_logprobs",
    "top_prompt_logprobs",
})

UNAUTHORIZED = {"detail": "Unauthorized"}
RATE_LIMITED_BODY = {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None,
                     "code": "1300", "raw_status_code": 429}
MESSAGE_ORDER_ERROR = {"object": "error", "type": "invalid_request_message_order", "param": None, "code": "3230"}
CAPACITY_BODY = {"object": "error", "message": "Service tier capacity exceeded for this model.",
                 "type": "invalid_request_error", "param": None, "code": None}

_REPLY = ("This is a simulated reply from the local Mistral API simulator. The request was received, "
          "validated and answered without contacting the real service.")


def _hex32() -> str:
    return secrets.token_hex(16)


def _tokens(text: str) -> int:
    """A plausible token count: about 1.3 tokens per word, at least 1."""
    return max(1, round(len(text.split()) * 1.3))


def _message_text(messages: list[Any]) -> str:
    parts: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return " ".join(parts)


def model_card(model_id: str, created: int) -> dict[str, Any]:
    """The `/v1/models` card of `model_id` (aliases = the group's other ids, `type: base`)."""
    g = _GROUP_OF[model_id]
    return {
        "id": model_id, "object": "model", "created": created, "owned_by": "mistralai",
        "capabilities": {k: k in g["caps"] for k in _CAP_KEYS},
        "name": g["ids"][0], "description": g["desc"], "max_context_length": g["ctx"],
        "aliases": [i for i in g["ids"] if i != model_id], "deprecation": None,
        "deprecation_replacement_model": None, "default_model_temperature": g["temp"], "type": "base",
    }


def _validation_error(detail: list[dict[str, Any]]) -> Response:
    """422 in the wrapped form seen in the field (FastAPI detail under `message`)."""
    return Response.json(422, {"object": "error", "message": {"detail": detail}, "type": "invalid_request_error",
                               "param": None, "code": None})


def _validate_chat(body: Any) -> Response | None:
    """Pydantic-style checks of a ChatCompletionRequest; None when valid."""
    if not isinstance(body, dict):
        return _validation_error([{"type": "model_attributes_type", "loc": ["body"],
                                   "msg": "Input should be a valid dictionary or object to extract fields from",
                                   "input": body}])
    errors: list[dict[str, Any]] = []
    for name in ("model", "messages"):
        if name not in body:
            errors.append({"type": "missing", "loc": ["body", name], "msg": "Field required", "input": body})
    if "model" in body and not isinstance(body["model"], str):
        errors.append({"type": "string_type", "loc": ["body", "model"], "msg": "Input should be a valid string",
                       "input": body["model"]})
    if "messages" in body:
        msgs = body["messages"]
        if not isinstance(msgs, list):
            errors.append({"type": "list_type", "loc": ["body", "messages"], "msg": "Input should be a valid list",
                           "input": msgs})
        else:
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
                    errors.append({"type": "union_tag_invalid", "loc": ["body", "messages", i],
                                   "msg": "Input tag found using 'role' does not match any of the expected tags: "
                                          "'assistant', 'system', 'tool', 'user'", "input": m})
    if "stream" in body and not isinstance(body["stream"], bool):
        errors.append({"type": "bool_type", "loc": ["body", "stream"], "msg": "Input should be a valid boolean",
                       "input": body["stream"]})
    mt = body.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool)):
        errors.append({"type": "int_type", "loc": ["body", "max_tokens"], "msg": "Input should be a valid integer",
                       "input": mt})
    elif mt is not None and mt < 0:
        errors.append({"type": "greater_than_equal", "loc": ["body", "max_tokens"],
                       "msg": "Input should be greater than or equal to 0", "input": mt, "ctx": {"ge": 0}})
    for name, high in (("temperature", 1.5), ("top_p", 1.0)):  # ranges from the spec (fact sheet)
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            errors.append({"type": "float_type", "loc": ["body", name], "msg": "Input should be a valid number",
                           "input": v})
        elif v < 0:
            errors.append({"type": "greater_than_equal", "loc": ["body", name],
                           "msg": "Input should be greater than or equal to 0", "input": v, "ctx": {"ge": 0.0}})
        elif v > high:
            errors.append({"type": "less_than_equal", "loc": ["body", name],
                           "msg": f"Input should be less than or equal to {high}", "input": v, "ctx": {"le": high}})
    for name in sorted(set(body) - CHAT_FIELDS):
        errors.append({"type": "extra_forbidden", "loc": ["body", name], "msg": "Extra inputs are not permitted",
                       "input": body[name]})
    return _validation_error(errors) if errors else None


def _serving_check(messages: list[dict[str, Any]]) -> Response | None:
    """The serving layer's conversation checks (400), on a schema-valid `messages` list; None when fine."""
    if not messages:
        message = "Conversation must have at least one message"
    else:
        last = messages[-1]
        role = last.get("role")
        if role in ("user", "tool") or (role == "assistant" and last.get("prefix") is True):
            return None
        message = f"Expected last role User or Tool (or Assistant with prefix True) for serving but got {role}"
    return Response.json(400, {**MESSAGE_ORDER_ERROR, "message": message})


class _Windows:
    """Per-minute fixed windows (aligned on the wall-clock minute) for requests and tokens, and the
    calendar month's totals (UTC) behind the monthly quota headers."""

    def __init__(self, req_limit: int, token_limit: int, req_limit_month: int = 2_000_000,
                 token_limit_month: int = 1_000_000_000) -> None:
        self.req_limit = req_limit
        self.token_limit = token_limit
        self.req_limit_month = req_limit_month
        self.token_limit_month = token_limit_month
        self.window = -1
        self.reqs = 0
        self.tokens = 0
        self.month: tuple[int, int] | None = None
        self.month_reqs = 0
        self.month_tokens = 0

    def roll(self, now: float) -> None:
        w = int(now // 60)
        if w != self.window:
            self.window, self.reqs, self.tokens = w, 0, 0
        t = datetime.fromtimestamp(now, UTC)
        if (t.year, t.month) != self.month:
            self.month, self.month_reqs, self.month_tokens = (t.year, t.month), 0, 0

    def count_request(self) -> None:
        self.reqs += 1
        self.month_reqs += 1

    def count_tokens(self, n: int) -> None:
        self.tokens += n
        self.month_tokens += n

    def reset_s(self, now: float) -> int:
        return max(1, int((self.window + 1) * 60 - now + 0.999))

    def month_reset_s(self, now: float) -> int:
        """Seconds until the next calendar month (UTC) starts: when the monthly quota resets."""
        t = datetime.fromtimestamp(now, UTC)
        nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
        return max(1, int(nxt.timestamp() - now + 0.999))


class MistralSimulator(SimServer):
    """The Mistral API on 127.0.0.1 with switchable faults; see the module docstring for choices."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_keys: Iterable[str] = (), mode: str = "ok",
                 status: int = 503, latency_s: float = 3.0, fail_fraction: float = 0.3, req_per_minute: int = 720,
                 tokens_per_minute: int = 5_000_000, seed: int | None = None) -> None:
        super().__init__(host, port)
        self._keys = frozenset(k for k in api_keys if k)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._win = _Windows(req_per_minute, tokens_per_minute)
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_MAX)
        self._release = threading.Event()  # set to release requests hanging in the current hang mode
        self._mode = "ok"
        self._status = 503
        self._latency_s = 3.0
        self._fail_fraction = 0.3
        self._incidents: list[dict[str, Any]] = []
        self._open_incident: str | None = None
        self._script: list[dict[str, Any]] = []  # mode "recorded": the answers a replay plays (set_script)
        self._script_pos: dict[tuple[int, bool], int] = {}
        self._script_gap_s = 0.5
        self._probe_segment, self._last_probe = -1, float("-inf")
        self._seed_feed()
        self.set_mode(mode, status=status, latency_s=latency_s, fail_fraction=fail_fraction)

    # -- configuration -----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def mode_state(self) -> dict[str, Any]:
        """The current fault settings (what `GET /_sim/mode` answers)."""
        with self._lock:
            return {"mode": self._mode, "status": self._status, "latency_s": self._latency_s,
                    "fail_fraction": self._fail_fraction}

    @staticmethod
    def validate_mode(mode: Any, status: Any = None, latency_s: Any = None, fail_fraction: Any = None) -> str | None:
        """Why these settings are invalid, or None; shared by `set_mode` and the admin route."""
        if mode not in MODES:
            return f"unknown mode {mode!r}; accepted modes: {', '.join(MODES)}"
        if status is not None and (isinstance(status, bool) or status not in SERVER_ERROR_STATUSES):
            return f"status must be one of {', '.join(map(str, SERVER_ERROR_STATUSES))}, got {status!r}"
        if latency_s is not None and (isinstance(latency_s, bool) or not isinstance(latency_s, int | float)
                                      or not 0 <= latency_s <= HANG_MAX_S):
            return f"latency_s must be a number of seconds in [0, {HANG_MAX_S:g}], got {latency_s!r}"
        if fail_fraction is not None and (isinstance(fail_fraction, bool) or not isinstance(fail_fraction, int | float)
                                          or not 0 <= fail_fraction <= 1):
            return f"fail_fraction must be a number in [0, 1], got {fail_fraction!r}"
        return None

    def set_mode(self, mode: str, *, status: int | None = None, latency_s: float | None = None,
                 fail_fraction: float | None = None) -> None:
        """Switch the fault mode (and its options); releases requests hanging in the old mode."""
        problem = self.validate_mode(mode, status, latency_s, fail_fraction)
        if problem:
            raise ValueError(problem)
        with self._lock:
            was_incident = self._mode in INCIDENT_MODES or self._scripted_incident()
            self._mode = mode
            self._script, self._script_pos, self._probe_segment = [], {}, -1
            if status is not None:
                self._status = int(status)
            if latency_s is not None:
                self._latency_s = float(latency_s)
            if fail_fraction is not None:
                self._fail_fraction = float(fail_fraction)
            old, self._release = self._release, threading.Event()
            if mode in INCIDENT_MODES and not was_incident:
                self._feed_update("Investigating", new=True)
            elif was_incident and mode not in INCIDENT_MODES:
                self._feed_update("Resolved")
        old.set()

    def set_script(self, segments: list[dict[str, Any]], gap_s: float = 0.5) -> None:
        """Play recorded answers instead of a fault (`runbook replay`, sim/replay/fault.py): mode "recorded".

        `segments`: the original's bursts of probe answers in order, [{"answers": [{"status": int | None,
        "body": dict | None, "headers": {..}, "latency_s": float}, ...]}, ...]. The runbooks' probes
        (User-Agent mistral-runbooks/...) come in bursts too (a notebook's probes, then a pause of at least
        `gap_s`): the n-th burst gets the n-th segment's answers, round robin, the last one repeating. Order,
        not the clock, pairs them: a replay's notebooks start at their own pace. Other callers (our
        service) get the answers of the segment the probes are at. Status None: no answer (a hang); a
        2xx: the genuine endpoint's answer after the recorded latency. `set_mode` ends the script.
        """
        if not segments or any(not s.get("answers") for s in segments):
            raise ValueError("a script needs segments, each with at least one answer")
        with self._lock:
            was_incident = self._mode in INCIDENT_MODES or self._scripted_incident()
            self._mode = "recorded"
            self._script = [{"answers": list(seg["answers"])} for seg in segments]
            self._script_pos, self._script_gap_s = {}, float(gap_s)
            self._probe_segment, self._last_probe = -1, float("-inf")
            old, self._release = self._release, threading.Event()
            if self._scripted_incident() and not was_incident:
                self._feed_update("Investigating", new=True)
            elif was_incident and not self._scripted_incident():
                self._feed_update("Resolved")
        old.set()

    def _scripted_incident(self) -> bool:
        """Whether the script holds a 5xx (as the server_error and flaky modes, it opens a status-feed incident)."""
        return any((a.get("status") or 0) >= 500 for seg in self._script for a in seg["answers"])

    def _next_answer(self, probe: bool) -> dict[str, Any]:
        with self._lock:
            if probe:
                now = time.monotonic()
                if now - self._last_probe > self._script_gap_s:  # a new burst of probes: the next segment
                    self._probe_segment = min(self._probe_segment + 1, len(self._script) - 1)
                self._last_probe = now
            index = max(self._probe_segment, 0)
            answers = self._script[index]["answers"]
            pos = self._script_pos.get((index, probe), 0)
            self._script_pos[(index, probe)] = pos + 1
            return answers[pos % len(answers)]

    def _recorded(self, request: Request, endpoint: Any) -> Answer:
        """One recorded answer (set_script): its latency, status, body and headers."""
        answer = self._next_answer(request.headers.get("User-Agent", "").startswith("mistral-runbooks/"))
        status = answer.get("status")
        if status is None:  # recorded as no answer: hold the request until the script changes or we stop
            with self._lock:
                release = self._release
            release.wait(HANG_MAX_S)
            return NO_RESPONSE
        if self.stop_event.wait(min(max(float(answer.get("latency_s") or 0.0), 0.0), HANG_MAX_S)):
            return NO_RESPONSE
        headers = {"mistral-correlation-id": str(uuid.uuid4())}
        if 200 <= int(status) < 300:
            resp = endpoint(request, headers)
            return self._with_limits(resp, headers, count=False) if isinstance(resp, Response | StreamResponse) \
                else resp
        resp = self._with_limits(Response.json(int(status), answer.get("body") or {}), headers, count=False)
        resp.headers.update({str(k): str(v) for k, v in (answer.get("headers") or {}).items()})
        return resp

    def _on_stop(self) -> None:
        with self._lock:  # release current hangs; a fresh event so a restart in hang mode hangs again
            old, self._release = self._release, threading.Event()
        old.set()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recent requests (last 1000): method, path, time, status, auth_present (never the key)."""
        with self._lock:
            return [dict(r) for r in self._log]

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Answer:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            return self._admin(request, path)
        t0 = time.time()
        entry = {"method": request.method, "path": request.path, "time": utc_iso(t0), "status": None,
                 "auth_present": bool(request.headers.get("Authorization")), "mode": self._mode}
        try:
            answer = self._route(request, path)
        except Exception:  # noqa: BLE001
            answer = Response.json(500, {"detail": "Internal Server Error"})
        entry["status"] = None if answer is NO_RESPONSE else answer.status  # type: ignore[union-attr]
        entry["latency_ms"] = round((time.time() - t0) * 1000, 1)
        with self._lock:
            self._log.append(entry)
        return answer

    def _route(self, request: Request, path: str) -> Answer:
        if path == "/feed.rss" and request.method in ("GET", "HEAD"):
            return Response(200, self.feed_rss().encode(), "application/rss+xml; charset=utf-8")
        if path == "/v1/models":
            return self._v1(request, "GET", self._list_models)
        if path.startswith("/v1/models/") and path.count("/") == 3:
            model_id = path.rsplit("/", 1)[1]
            return self._v1(request, "GET", lambda r, h: self._get_model(model_id, h))
        if path == "/v1/chat/completions":
            return self._v1(request, "POST", self._chat)
        rid = _hex32()
        return Response.json(404, {"message": "no Route matched with those values", "request_id": rid},
                             {"x-kong-request-id": rid})

    def _v1(self, request: Request, method: str, endpoint: Any) -> Answer:
        """Everything common to the /v1 routes: faults, auth, windows, headers."""
        if request.method != method:
            return Response.json(405, {"detail": "Method Not Allowed"}, {"Allow": method})
        state = self.mode_state()
        mode = state["mode"]
        if mode == "recorded":
            return self._recorded(request, endpoint)
        deadline = time.monotonic() + HANG_MAX_S
        while mode == "hang":  # read the request, then say nothing until stop or a mode change
            with self._lock:
                release = self._release
            if self.stopping or time.monotonic() >= deadline:
                return NO_RESPONSE
            release.wait(min(1.0, max(0.0, deadline - time.monotonic())))  # set by stop / set_mode
            if self.stopping:
                return NO_RESPONSE
            state = self.mode_state()
            mode = state["mode"]
        if mode == "slow" and self.stop_event.wait(state["latency_s"]):
            return NO_RESPONSE
        headers = {"mistral-correlation-id": str(uuid.uuid4())}
        if not self._authorized(request) or mode == "auth_failure":
            return self._with_limits(Response.json(401, UNAUTHORIZED), headers, count=False)
        if mode == "flaky":
            with self._lock:
                fail = self._rng.random() < state["fail_fraction"]
                as_503 = self._rng.random() < 0.5
            if fail:
                mode = "server_error" if as_503 else "rate_limited"
                state = dict(state, status=503)
        if mode == "rate_limited":
            resp = Response.json(429, RATE_LIMITED_BODY)
            self._with_limits(resp, headers, count=False)
            resp.headers.update({"x-ratelimit-limit-req-minute": "0", "x-ratelimit-remaining-req-minute": "0"})
            return resp
        if mode == "capacity_exceeded":
            return self._with_limits(Response.json(429, CAPACITY_BODY), headers)
        if mode == "server_error":
            return self._with_limits(self._server_error(state["status"]), headers)
        # the genuine per-minute windows
        with self._lock:
            now = time.time()
            self._win.roll(now)
            if self._win.reqs >= self._win.req_limit or self._win.tokens >= self._win.token_limit:
                limited = True
            else:
                limited = False
                self._win.count_request()
        if limited:
            return self._with_limits(Response.json(429, RATE_LIMITED_BODY), headers, count=False)
        resp = endpoint(request, headers)
        if isinstance(resp, Response | StreamResponse):
            self._with_limits(resp, headers, count=False)
        return resp

    def set_api_keys(self, api_keys: Iterable[str]) -> None:
        """Replace the accepted keys at runtime (a key revoked, a new one issued at the console)."""
        self._keys = frozenset(k for k in api_keys if k)

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if not self._keys:
            return True
        return any(secrets.compare_digest(token.encode(), k.encode()) for k in self._keys)

    def _with_limits(self, resp: Any, headers: dict[str, str], *, count: bool = True) -> Any:
        """Attach correlation id + current x-ratelimit-* headers (counting this request if asked)."""
        with self._lock:
            now = time.time()
            self._win.roll(now)
            if count:
                self._win.count_request()
            w = self._win
            resp.headers.update(headers)
            resp.headers.update({
                "x-ratelimit-limit-req-minute": str(w.req_limit),
                "x-ratelimit-remaining-req-minute": str(max(0, w.req_limit - w.reqs)),
                "x-ratelimit-reset-req-minute": str(w.reset_s(now)),
                "x-ratelimit-limit-tokens-minute": str(w.token_limit),
                "x-ratelimit-remaining-tokens-minute": str(max(0, w.token_limit - w.tokens)),
                # the monthly quota (names seen in 2026; values: this calendar month's totals)
                "x-ratelimit-limit-req-month": str(w.req_limit_month),
                "x-ratelimit-remaining-req-month": str(max(0, w.req_limit_month - w.month_reqs)),
                "x-ratelimit-limit-tokens-month": str(w.token_limit_month),
                "x-ratelimit-remaining-tokens-month": str(max(0, w.token_limit_month - w.month_tokens)),
                "x-ratelimit-reset-tokens-month": str(w.month_reset_s(now)),
            })
        return resp

    @staticmethod
    def _server_error(status: int) -> Response:
        rid = _hex32()
        if status == 502:
            return Response.json(502, {"message": "An invalid response was received from the upstream server",
                                       "request_id": rid})
        if status == 503:
            return Response.json(503, {"object": "error", "message": "Service unavailable", "type": "server_error",
                                       "param": None, "code": None, "raw_status_code": 503})
        if status == 504:
            return Response.json(504, {"message": "The upstream server is timing out", "request_id": rid})
        return Response.json(500, {"detail": "Internal Server Error"})

    # -- endpoints ---------------------------------------------------------------------------
    def _list_models(self, request: Request, headers: dict[str, str]) -> Response:
        created = int(time.time())
        return Response.json(200, {"object": "list", "data": [model_card(i, created) for i in MODEL_IDS]})

    def _get_model(self, model_id: str, headers: dict[str, str]) -> Response:
        if model_id not in _GROUP_OF:
            return Response.json(404, {"object": "error", "message": f"Invalid model: {model_id}",
                                       "type": "invalid_model", "param": None, "code": "1500",
                                       "raw_status_code": 404})
        return Response.json(200, model_card(model_id, int(time.time())))

    def _chat(self, request: Request, headers: dict[str, str]) -> Answer:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _validation_error([{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": str(exc).split(":")[0]}}])
        invalid = _validate_chat(body)
        if invalid:
            return invalid
        model = body["model"]
        if model not in _GROUP_OF:
            return Response.json(400, {"object": "error", "message": f"Invalid model: {model}",
                                       "type": "invalid_model", "param": None, "code": "1500",
                                       "raw_status_code": 400})
        refused = _serving_check(body["messages"])
        if refused:
            return refused
        words = _REPLY.split()
        finish = "stop"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and _tokens(_REPLY) > max_tokens:
            words = words[: max(0, int(max_tokens / 1.3))]
            finish = "length"
        content = " ".join(words)
        prompt_tokens = _tokens(_message_text(body["messages"])) + 4 * len(body["messages"])
        completion_tokens = _tokens(content) if content else 0
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        with self._lock:
            self._win.count_tokens(usage["total_tokens"])
        headers = dict(headers, **{"x-ratelimit-tokens-query-cost": str(usage["total_tokens"])})
        cid, created = _hex32(), int(time.time())
        if body.get("stream"):
            return StreamResponse(200, self._sse(cid, model, created, words, finish, usage), headers=headers)
        return Response.json(200, {
            "id": cid, "object": "chat.completion", "model": model, "usage": usage, "created": created,
            "choices": [{"index": 0, "message": {"content": content, "tool_calls": None, "prefix": False,
                                                 "role": "assistant"}, "finish_reason": finish}],
        }, headers)

    @staticmethod
    def _sse(cid: str, model: str, created: int, words: list[str], finish: str,
             usage: dict[str, int]) -> Iterator[bytes]:
        def event(delta: dict[str, Any], reason: str | None = None, use: dict[str, int] | None = None) -> bytes:
            chunk = {"id": cid, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                     "object": "chat.completion.chunk", "created": created, "usage": use}
            return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

        yield event({"role": "assistant", "content": ""})
        for i in range(0, len(words), 4):
            piece = " ".join(words[i:i + 4])
            yield event({"content": piece if i == 0 else " " + piece})
        yield event({"content": ""}, finish, usage)
        yield b"data: [DONE]\n\n"

    # -- status page feed --------------------------------------------------------------------
    def _seed_feed(self) -> None:
        """An old, resolved Audio API incident, so the feed is never empty (newest first)."""
        t = time.time() - 9 * 86400
        self._incidents = [
            {"id": "4c854daa", "component": "Audio API", "title": "Audio API Degraded", "ts": t + 5400,
             "status": "Resolved", "text": "The incident has been resolved"},
            {"id": "4c854daa", "component": "Audio API", "title": "Audio API Degraded", "ts": t,
             "status": "Investigating", "text": "We are investigating elevated error rates on the Audio API"},
        ]

    def _feed_update(self, status: str, new: bool = False) -> None:
        if new or self._open_incident is None:
            self._open_incident = secrets.token_hex(4)
        text = ("We are investigating elevated error rates on the Chat API" if status == "Investigating"
                else "The incident has been resolved")
        self._incidents.insert(0, {"id": self._open_incident, "component": "Chat API", "title": "Chat API Degraded",
                                   "ts": time.time(), "status": status, "text": text})
        if status == "Resolved":
            self._open_incident = None
        del self._incidents[50:]

    def feed_rss(self) -> str:
        """status.mistral.ai's RSS (Checkly): one <item> per incident update, newest first."""
        with self._lock:
            items = list(self._incidents)
        out = ['<?xml version="1.0" encoding="UTF-8"?>', '<rss version="2.0"><channel>',
               "<title>Mistral AI Status Page</title><link>https://status.mistral.ai</link>",
               "<description>Mistral AI Status Page</description>"]
        for it in items:
            link = f"https://status.mistral.ai/incident/{it['id']}"
            desc = (f"Status: {it['status']}<br/>{it['text']}<br/><br/>Affected services"
                    f"<ul><li>{it['component']}</li></ul>")
            pub = format_datetime(datetime.fromtimestamp(it["ts"], UTC), usegmt=True)
            out.append(f"<item><title><![CDATA[{it['title']}]]></title><link>{escape(link)}</link>"
                       f'<guid isPermaLink="true">{escape(link)}</guid><pubDate>{pub}</pubDate>'
                       f"<description><![CDATA[{desc}]]></description></item>")
        out.append("</channel></rss>")
        return "\n".join(out)

    # -- admin -------------------------------------------------------------------------------
    def _admin(self, request: Request, path: str) -> Response:
        if path == "/_sim/health" and request.method == "GET":
            return Response.json(200, {"ok": True})
        if path == "/_sim/requests" and request.method == "GET":
            return Response.json(200, {"requests": self.requests})
        if path == "/_sim/mode" and request.method == "GET":
            return Response.json(200, self.mode_state())
        if path == "/_sim/mode" and request.method == "POST":
            try:
                body = request.json()
            except (ValueError, UnicodeDecodeError):
                return Response.json(400, {"error": "body must be JSON, e.g. {\"mode\": \"rate_limited\"}"})
            if not isinstance(body, dict):
                return Response.json(400, {"error": "body must be a JSON object"})
            unknown = sorted(set(body) - {"mode", "status", "latency_s", "fail_fraction"})
            if unknown:
                return Response.json(400, {"error": f"unknown field(s) {unknown}; accepted: mode, status, "
                                                    "latency_s, fail_fraction"})
            mode = body.get("mode", self._mode)
            problem = self.validate_mode(mode, body.get("status"), body.get("latency_s"), body.get("fail_fraction"))
            if problem:
                return Response.json(400, {"error": problem, "accepted_modes": list(MODES)})
            self.set_mode(mode, status=body.get("status"), latency_s=body.get("latency_s"),
                          fail_fraction=body.get("fail_fraction"))
            return Response.json(200, self.mode_state())
        return Response.json(404, {"error": f"no admin route {request.method} {path}",
                                   "routes": ["GET /_sim/mode", "POST /_sim/mode", "GET /_sim/requests",
                                              "GET /_sim/health"]})


def cli_main(argv: list[str] | None = None) -> int:
    """`runbook sim`: serve the simulator in the foreground until SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(prog="runbook sim", description="Local Mistral API simulator with fault modes.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--status", type=int, choices=SERVER_ERROR_STATUSES, default=503,
                   help="status for server_error mode")
    p.add_argument("--latency", type=float, default=3.0, help="seconds added in slow mode")
    p.add_argument("--fail-fraction", type=float, default=0.3, help="share of failed requests in flaky mode")
    p.add_argument("--api-key-env", default="MISTRAL_API_KEY",
                   help="environment variable holding the accepted key (unset: any bearer token)")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env) or ""
    if not key:
        print(f"{args.api_key_env} is unset: accepting any non-empty bearer token", file=sys.stderr, flush=True)
    sim = MistralSimulator(host=args.host, port=args.port, api_keys=[key] if key else (), mode=args.mode,
                           status=args.status, latency_s=args.latency, fail_fraction=args.fail_fraction)
    return serve_foreground(sim, f"Mistral simulator on {{url}} (mode={args.mode})")


def serve_foreground(server: SimServer, line: str) -> int:
    """Start `server`, print `line` (with {url}), serve until SIGINT/SIGTERM, stop; returns 0."""
    try:
        server.start()
        print(line.format(url=server.url), flush=True)
        wait_for_stop_signal()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
