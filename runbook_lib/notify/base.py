"""What every outbound integration shares: the update it is told, the request it makes, how that is shown.

An `Update` is one incident message as `runbooks/comms.py` rendered it (status, the incident's one
severity, the texts, the verdict facts). Each provider (`notify.pagerduty`, `notify.slack`,
`notify.statuspage`) turns it into `Delivery` objects: the exact HTTP request, with every credential
replaced by `$ENV_NAME (sha256:...)`, so a dry run shows precisely what would be sent and an audit
shows precisely what was. `dispatch` plans every configured provider and sends only when approved
(or, for the team's own Slack, when configured: see `Provider.needs_approval`); the earlier sent
deliveries (`history`, read back from incident.json's `communications`) tell a provider what exists
already (the PagerDuty alert, the Slack thread, the status-page incident).

Credentials are read from environment variables whose NAMES are fixed per provider (overridable by
`RUNBOOK_<SERVICE>_..._ENV`-style variables where a team names them differently): never parameters,
never written anywhere; responses are reduced to the ids we need before they are kept.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .._time import iso_z
from ..secrets import SecretRef, read_secret

RECORD_URL_ENV = "RUNBOOK_RECORD_URL"  # where incident folders are served (links in pages and messages)
MAX_BACKOFF_S = 8.0
BUDGET_S = 60.0  # all of one update's requests together (each is also bounded by the run's timeout_s)
_PLACEHOLDER = "__RUNBOOK_CREDENTIAL__"  # stands for the credential while the curl body is escaped


@dataclass
class Update:
    """One incident message, as every channel is told it."""

    incident_id: str
    status: str  # INVESTIGATING, MITIGATING, RESOLVED (comms.STATUSES)
    level: str  # P1-P4, "" when a RESOLVED index has none
    error_class: str
    internal: str  # Slack mrkdwn (comms' slack template)
    external: str  # plain text for the public status page
    by: str = "runbook"
    facts: dict[str, Any] = field(default_factory=dict)  # the verdict facts (impact, action, affected, ...)
    record: str = ""  # the incident folder, as a path
    severity_note: str = ""  # why the severity changed since the last sent update ("" when it did not)
    title: str = "Mistral AI Integration"

    def record_link(self) -> str | None:
        """`$RUNBOOK_RECORD_URL/<folder name>/index.html`, when the records are served somewhere."""
        base = os.environ.get(RECORD_URL_ENV, "").strip().rstrip("/")
        name = self.record.rstrip("/").rsplit("/", 1)[-1] if self.record else ""
        return f"{base}/{name}/index.html" if base and name else None


@dataclass
class Delivery:
    """One request to one service: planned (dry run) or sent, with what came back. Secret-free."""

    service: str
    action: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)  # credentials shown as `$ENV (sha256:...)`
    body: dict[str, Any] = field(default_factory=dict)  # ditto
    approved: bool = False
    sent: bool = False
    ok: bool | None = None  # None: not sent
    http_status: int | None = None
    attempts: int = 0
    response: dict[str, Any] = field(default_factory=dict)  # the ids kept (dedup_key, ts, incident id)
    error: str | None = None
    note: str = ""  # why planned (or why not sent)
    at: str = ""
    lookup: dict[str, str] = field(default_factory=dict)  # what a `{placeholder}` in the URL is found by, at send time
    # where the credential goes: {"env": NAME, "header": "Authorization", "prefix": "OAuth "} or {"env", "field"}
    credential: dict[str, str] = field(default_factory=dict)
    deadline: float | None = field(default=None, repr=False, compare=False)  # time.monotonic(): no retry past it

    def shown(self) -> str:
        """The request as a reviewer reads it: method, URL, headers, JSON body (credentials redacted)."""
        head = "".join(f"\n{k}: {v}" for k, v in self.headers.items())
        found = "".join(f"\n# {{{k}}} found by: {v}" for k, v in self.lookup.items())
        return f"{self.method} {self.url}{head}\n\n{json.dumps(self.body, indent=2, ensure_ascii=False)}{found}"

    def curl(self) -> str:
        """The same request as a shell command: the credential comes from its variable, never written out.

        Empty when the URL needs a lookup first (`lookup`): then `shown()` says what it is found by.
        """
        if self.lookup or not self.method:
            return ""
        env, where = self.credential.get("env", ""), self.credential
        lines = [f"curl -sS --fail-with-body -X {self.method} {shlex.quote(self.url)}"]
        for name, value in self.headers.items():
            if env and name == where.get("header"):
                lines.append(f'-H "{name}: {where.get("prefix", "")}${{{env}}}"')
            else:
                lines.append(f"-H {shlex.quote(f'{name}: {value}')}")
        body = dict(self.body)
        if env and where.get("field"):  # unquoted heredoc: the shell puts the variable in; \ $ ` escaped
            body[where["field"]] = _PLACEHOLDER
            text = json.dumps(body, ensure_ascii=False)
            text = text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
            data = "<<JSON\n" + text.replace(f'"{_PLACEHOLDER}"', '"${' + env + '}"') + "\nJSON"
        else:
            data = "<<'JSON'\n" + json.dumps(body, ensure_ascii=False) + "\nJSON"
        return " \\\n  ".join(lines) + " \\\n  --data-binary @- " + data

    def state(self) -> str:
        if not self.sent:
            return "DRY RUN" if not self.error else "NOT SENT"
        return "SENT" if self.ok else "FAILED"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("deadline")
        return d

    def time_left(self) -> float:
        """Seconds until the deadline (inf without one): retries wait only while this allows."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


@dataclass
class Configured:
    """Whether a provider can be used, and what is set (names and fingerprints only)."""

    ok: bool
    settings: dict[str, str]  # env name -> what may be shown ("present, 32 characters, sha256:...", a URL)
    missing: list[str]


class Provider(Protocol):
    name: str
    needs_approval: bool  # PagerDuty pages people, the status page is public; Slack is the team's own channel

    def configured(self) -> Configured: ...

    def plan(self, update: Update, history: list[dict[str, Any]]) -> list[Delivery]: ...

    def send(self, delivery: Delivery, timeout_s: float) -> Delivery: ...

    def probe(self, timeout_s: float) -> tuple[bool, str]: ...


def tls() -> ssl.SSLContext:
    """The system trust store, as OpenSSL finds it: `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured (a proxy's CA).

    Every client here gets this one context (httpx, the pagerduty client's httpx2, slack_sdk's urllib),
    so one environment variable trusts a corporate CA for all of them.
    """
    return ssl.create_default_context()


def secret_shown(ref: SecretRef) -> str:
    """How a credential appears in a shown request: its variable and fingerprint, never its value."""
    return f"${ref.env_var} ({ref.fingerprint})" if ref.present else f"${ref.env_var} (absent)"


def secret(env_name: str) -> SecretRef:
    return read_secret(env_name)


def setting(env_name: str, default: str = "") -> str:
    """A non-secret setting (an id, a URL) from the environment."""
    return os.environ.get(env_name, "").strip() or default


def env_name(override_env: str, default: str) -> str:
    """The name of the variable holding a credential: `$override_env` if a team set it, else `default`."""
    return os.environ.get(override_env, "").strip() or default


def sent_before(history: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    """Earlier deliveries to `service` that the service accepted, oldest first."""
    return [e for e in history if isinstance(e, dict) and e.get("channel") == service and e.get("sent") and e.get("ok")]


def backoff(attempt: int, base_s: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): Retry-After when given, else base * 2^(n-1), capped."""
    try:
        if retry_after is not None:
            return min(MAX_BACKOFF_S, max(0.0, float(retry_after)))
    except ValueError:
        pass
    return min(MAX_BACKOFF_S, base_s * 2 ** (attempt - 1))


def dispatch(update: Update, history: list[dict[str, Any]], *, approved: bool, timeout_s: float,
             providers: list[Provider], budget_s: float = BUDGET_S) -> list[Delivery]:
    """Plan the update for each provider (`providers.configured()`) and send what is approved; every delivery returned.

    A provider that needs approval is sent to only when `approved` (the runbook's `apply_changes`);
    otherwise its deliveries are dry runs that show the exact request. A failure is the delivery's
    `error`, never an exception: telling people must not stop the runbook. Sending stops once
    `budget_s` has passed (each request is bounded by `timeout_s` and its retries, the whole by this):
    what is left is recorded as not sent, with the reason.
    """
    out: list[Delivery] = []
    deadline = time.monotonic() + budget_s
    for provider in providers:
        try:
            planned = provider.plan(update, history)
        except Exception as exc:  # noqa: BLE001 - a provider's bug must not stop the runbook
            planned = [Delivery(provider.name, "plan", "", "", error=f"could not plan: {type(exc).__name__}")]
        for d in planned:
            d.at = d.at or iso_z(timespec="milliseconds")
            d.approved = approved or not provider.needs_approval
            if d.approved and not d.error:
                out.append(_send(provider, d, timeout_s, deadline, budget_s))
            else:
                out.append(d)
    return out


def _send(provider: Provider, d: Delivery, timeout_s: float, deadline: float, budget_s: float) -> Delivery:
    left = deadline - time.monotonic()
    if left <= 0.5:
        d.error = f"not sent: the {budget_s:g} s allowed for notifications were used up"
        return d
    t0 = time.monotonic()
    d.deadline = deadline
    try:
        d = provider.send(d, min(timeout_s, left))
    except Exception as exc:  # noqa: BLE001 - whatever a client raises, the runbook goes on
        d.sent, d.ok, d.error = True, False, f"not delivered: {type(exc).__name__}"
    d.note = (d.note + f" (took {time.monotonic() - t0:.1f} s)").strip()
    return d


def log_entries(deliveries: list[Delivery], update: Update, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The deliveries as `communications` entries (same keys as the drafts' entries, plus the request)."""
    return [{"at": d.at, "by": update.by, "channel": d.service, "status": update.status,
             "severity": update.level or None, "action": d.action, "text": _text_of(d),
             "file": None, "posted": bool(d.sent and d.ok), "sent": d.sent, "ok": d.ok, "approved": d.approved,
             "error": d.error, "request": {"method": d.method, "url": d.url, "headers": d.headers, "body": d.body,
                         **({"lookup": d.lookup} if d.lookup else {}), "curl": d.curl()},
             "http_status": d.http_status, "attempts": d.attempts, "response": d.response, "note": d.note,
             **(extra or {})} for d in deliveries]


def _text_of(d: Delivery) -> str:
    body = d.body
    for path in (("payload", "summary"), ("text",), ("incident", "body"), ("incident", "name")):
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return d.action


def markdown(deliveries: list[Delivery]) -> str:
    """How a notebook shows the deliveries: state, service, action, why, and the request itself."""
    if not deliveries:
        return ("No PagerDuty, Slack Web API or status page configured (see `runbook doctor`): "
                "nothing to send.")
    parts = []
    for d in deliveries:
        outcome = (f"HTTP {d.http_status}" if d.http_status else "") + (f", {d.error}" if d.error else "")
        approval = "" if d.sent or d.approved else " (to send: re-run with `apply_changes=True`)"
        parts.append(f"**{d.state()}** {d.service} `{d.action}`{approval}"
                     + (f": {outcome.strip(', ')}" if outcome else "") + (f" ({d.note})" if d.note else "")
                     + f"\n\n```\n{d.shown()}\n```"
                     + (f"\n\nThe same with curl (the credential from its variable):\n\n```bash\n{d.curl()}\n```"
                        if d.curl() and not d.sent else ""))
    return "\n\n".join(parts)
