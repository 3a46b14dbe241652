"""Slack through the official `slack_sdk`: the incident's messages as Block Kit, in one thread.

Two ways in, both optional:
- the Web API (`WebClient`, a bot token with `chat:write`): the first update is posted to the
  channel (`chat.postMessage`) and becomes the incident's thread; every later update is a reply in
  that thread (`chat.postMessage` with `thread_ts`; RESOLVED also broadcast to the channel with
  `reply_broadcast`) and the first message is edited to show the current status (`chat.update`).
  The thread's `ts` is read back from the incident's `communications` log, so the diagnosis and,
  later, the postmortem write into the same thread;
- an incoming webhook (`WebhookClient`): one message per update, no thread (webhooks cannot reply);
  used only when the Web API is not configured.

Texts are Slack mrkdwn, not Markdown: `*bold*`, `_italic_`, `<url|text>`, with &, < and > escaped
(the comms templates do that); `mrkdwn()` turns any Markdown `**bold**` a team template may hold
into `*bold*`, so no `**` reaches Slack. Each message is a header block (the first line, plain
text), section blocks (mrkdwn, at most 3,000 characters each) and a context block (incident id,
runbook, a link to the record when `$RUNBOOK_RECORD_URL` is set); `text` carries the same message
for notifications and clients that do not render blocks.

The team's own channel is told as soon as it is configured (as the webhook always was): no
approval is asked for Slack, each post is still recorded with its request (token redacted).

Configuration (environment only): `SLACK_BOT_TOKEN` (`RUNBOOK_SLACK_TOKEN_ENV` names another
variable), `SLACK_CHANNEL` (a channel id, e.g. C0123456789), `SLACK_API_URL` (default
https://slack.com/api/); the webhook URL is in the variable the notebooks' `slack_webhook_env` names.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import Configured, Delivery, Update, env_name, secret, secret_shown, sent_before, setting, tls

NAME = "slack_api"
TOKEN_ENV_DEFAULT = "SLACK_BOT_TOKEN"
TOKEN_ENV_OVERRIDE = "RUNBOOK_SLACK_TOKEN_ENV"
CHANNEL_ENV = "SLACK_CHANNEL"
URL_ENV = "SLACK_API_URL"
DEFAULT_URL = "https://slack.com/api/"
HEADER_MAX = 150
SECTION_MAX = 3000
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")


def mrkdwn(text: str) -> str:
    """Markdown emphasis and links as Slack mrkdwn: `**b**` -> `*b*`, `[t](u)` -> `<u|t>`; no `**` is left."""
    text = _BOLD.sub(r"*\1*", str(text))
    text = _MD_LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    while "**" in text:
        text = text.replace("**", "*")
    return text


def blocks(text: str, context: str = "") -> list[dict[str, Any]]:
    """The message as Block Kit: header (first line), mrkdwn sections, an optional context line."""
    text = mrkdwn(text)
    first, _, rest = text.strip().partition("\n")
    out: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": _cut(first, HEADER_MAX),
                                                             "emoji": True}}]
    for chunk in _chunks(rest.strip(), SECTION_MAX):
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    if context:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(context)}]})
    return out


def _chunks(text: str, size: int) -> list[str]:
    """Line-aligned pieces of at most `size` characters (a line longer than that is cut)."""
    pieces, current = [], ""
    for line in text.splitlines():
        line = _cut(line, size)
        if current and len(current) + 1 + len(line) > size:
            pieces.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    return pieces + ([current] if current else [])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def context_line(update: Update) -> str:
    link = update.record_link()
    return (f"Incident `{update.incident_id or 'no id'}` · {update.by}"
            + (f" · <{link}|incident record>" if link else ""))


# -- the Web API: one thread per incident --------------------------------------------------------------------
class SlackWebApi:
    """`chat.postMessage` / `chat.update` through `slack_sdk.WebClient`; 429 retried by its RateLimitErrorRetryHandler."""

    name = NAME
    needs_approval = False

    def __init__(self, *, max_retries: int = 2) -> None:
        self.max_retries = max_retries

    @property
    def token_env(self) -> str:
        return env_name(TOKEN_ENV_OVERRIDE, TOKEN_ENV_DEFAULT)

    @property
    def base_url(self) -> str:
        url = setting(URL_ENV, DEFAULT_URL)
        return url if url.endswith("/") else url + "/"

    def configured(self) -> Configured:
        token, channel = secret(self.token_env), setting(CHANNEL_ENV)
        missing = [n for n, ok in ((self.token_env, token.present), (CHANNEL_ENV, bool(channel))) if not ok]
        shown = {self.token_env: str(token).split(": ", 1)[-1], CHANNEL_ENV: channel or "(unset)",
                 URL_ENV: self.base_url}
        return Configured(not missing, shown, missing)

    def plan(self, update: Update, history: list[dict[str, Any]]) -> list[Delivery]:
        channel = setting(CHANNEL_ENV)
        message = {"channel": channel, "text": mrkdwn(update.internal),
                   "blocks": blocks(update.internal, context_line(update))}
        root = next((e for e in sent_before(history, NAME) if e.get("action") == "post" and (e.get("response") or {}).get("ts")),
                    None)
        if root is None:
            return [self._delivery("post", "chat.postMessage", message, "first message: the incident's thread")]
        ts, where = root["response"]["ts"], root["response"].get("channel") or channel
        reply = {**message, "channel": where, "thread_ts": ts}
        if update.status == "RESOLVED":
            reply["reply_broadcast"] = True
        return [self._delivery("reply", "chat.postMessage", reply, f"in the thread of {ts}"),
                self._delivery("update", "chat.update", {**message, "channel": where, "ts": ts},
                               "the first message shows the current status")]

    def _delivery(self, action: str, method: str, body: dict[str, Any], note: str) -> Delivery:
        headers = {"Authorization": f"Bearer {secret_shown(secret(self.token_env))}",
                   "Content-Type": "application/json; charset=utf-8"}
        return Delivery(NAME, action, "POST", self.base_url + method, headers, body, note=note,
                        credential={"env": self.token_env, "header": "Authorization", "prefix": "Bearer "})

    def client(self, timeout_s: float, left_s: float = float("inf")) -> Any:
        from slack_sdk import WebClient

        return WebClient(token=secret(self.token_env).reveal(), base_url=self.base_url, timeout=timeout_s,  # type: ignore[arg-type]
                         ssl=tls(), retry_handlers=[_rate_limit_retry(self.max_retries, left_s)])

    def send(self, delivery: Delivery, timeout_s: float) -> Delivery:
        from slack_sdk.errors import SlackApiError

        if not secret(self.token_env).present:
            delivery.error = f"${self.token_env} is not set"
            return delivery
        client = self.client(timeout_s, delivery.time_left())
        call = client.chat_update if delivery.action == "update" else client.chat_postMessage
        delivery.sent, delivery.attempts = True, 1
        try:
            response = call(**delivery.body)
            delivery.ok, delivery.http_status = True, response.status_code
            delivery.response = {"ts": response.get("ts"), "channel": response.get("channel")}
        except SlackApiError as exc:
            delivery.ok, delivery.http_status = False, exc.response.status_code
            delivery.error = f"Slack answered HTTP {exc.response.status_code}: {exc.response.get('error')}"
        except Exception as exc:  # noqa: BLE001 - urllib's errors; the token is never in them, the name is enough
            delivery.ok, delivery.error = False, f"Slack unreachable: {type(exc).__name__}"
        return delivery

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        """`auth.test`: the token is valid and which workspace/bot it is (sends no message)."""
        from slack_sdk.errors import SlackApiError

        try:
            r = self.client(timeout_s).auth_test()
        except SlackApiError as exc:
            return False, f"auth.test refused: {exc.response.get('error')} (HTTP {exc.response.status_code})"
        except Exception as exc:  # noqa: BLE001
            return False, f"unreachable: {type(exc).__name__}"
        return True, f"auth.test ok: team {r.get('team')!s}, bot user {r.get('user')!s}"


def _rate_limit_retry(max_retries: int, left_s: float) -> Any:
    """slack_sdk's RateLimitErrorRetryHandler (it sleeps Retry-After + up to 1 s), but never past `left_s`."""
    import time

    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    deadline = time.monotonic() + left_s

    class Bounded(RateLimitErrorRetryHandler):
        def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            if not super()._can_retry(state=state, request=request, response=response, error=error):
                return False
            after = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
            try:
                wait = int(after[0] if isinstance(after, list) else after) + 1
            except ValueError:
                wait = 2
            return time.monotonic() + wait < deadline

    return Bounded(max_retry_count=max_retries)


# -- the incoming webhook -----------------------------------------------------------------------------------
def post_webhook(text: str, url_env: str, timeout_s: float, context: str = "") -> dict[str, Any]:
    """POST `text` (and its blocks) to the webhook in `$url_env`; never raises, never shows the URL.

    `error` is None when posted or when no webhook is configured (a draft only), else the reason.
    """
    from slack_sdk.webhook import WebhookClient

    url = secret(url_env)
    if not url.present:
        return {"posted": False, "reason": f"${url_env} is not set: message not posted (saved to files)", "error": None}
    try:
        response = WebhookClient(url.reveal() or "", timeout=timeout_s, ssl=tls()).send(  # type: ignore[arg-type]
            text=mrkdwn(text), blocks=blocks(text, context))
    except Exception as exc:  # noqa: BLE001 - urllib errors may carry the URL: only the type is kept
        reason = f"webhook unreachable: {type(exc).__name__}"
        return {"posted": False, "reason": reason, "error": reason}
    if response.status_code >= 300:
        reason = f"webhook answered HTTP {response.status_code}: {str(response.body)[:100]}"
        return {"posted": False, "reason": reason, "error": reason}
    return {"posted": True, "reason": f"posted (HTTP {response.status_code})", "error": None}


def webhook_curl(text: str, url_env: str, context: str = "") -> str:
    """The exact webhook request `post_webhook` would send, as a command: the URL (the credential) from its variable."""
    body = json.dumps({"text": mrkdwn(text), "blocks": blocks(text, context)}, ensure_ascii=False)
    return (f'curl -sS --fail-with-body -X POST "${{{url_env}}}" \\\n  -H \'Content-Type: application/json\' \\\n'
            f"  --data-binary @- <<'JSON'\n{body}\nJSON")


def probe_webhook(url_env: str, timeout_s: float) -> tuple[bool, str]:
    """POST an empty payload: Slack answers 400 `no_text` for a live webhook and posts nothing."""
    from slack_sdk.webhook import WebhookClient

    url = secret(url_env)
    try:
        r = WebhookClient(url.reveal() or "", timeout=timeout_s, ssl=tls()).send_dict({})  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        return False, f"unreachable: {type(exc).__name__}"
    body = str(r.body)[:40]
    live = r.status_code < 300 or (r.status_code == 400 and body in ("no_text", "invalid_payload"))
    return live, f"HTTP {r.status_code} {body!r}" + (" (live webhook; nothing posted)" if live else "")
