"""`runbook doctor`: which integrations are configured (their variables set) and reachable, secret-free.

Each configured integration gets one bounded probe that changes nothing (Slack `auth.test`, an
empty webhook POST that Slack answers `no_text`, a GET of the status page, an HTTP answer from the
PagerDuty Events API), all run at once, so the whole check ends within `timeout_s` plus a little.
Credentials appear as their variable's name and a SHA-256 fingerprint, never a value; a probe's
failure is named by its type, never by an exception text that could hold a URL with a token.
Nothing configured is a valid answer: the core runbooks need none of these.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from .base import Configured, secret

WEBHOOK_ENV = "SLACK_WEBHOOK_URL"  # the notebooks' default `slack_webhook_env`


@dataclass
class Row:
    integration: str
    configured: bool
    settings: dict[str, str]
    missing: list[str]
    reachable: bool | None  # None: not probed (not configured)
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SlackWebhook:
    """The incoming webhook the diagnosis notebooks post to (`slack_webhook_env`), for the doctor's table."""

    name = "slack_webhook"

    def __init__(self, url_env: str = WEBHOOK_ENV) -> None:
        self.url_env = url_env

    def configured(self) -> Configured:
        url = secret(self.url_env)
        return Configured(url.present, {self.url_env: str(url).split(": ", 1)[-1]}, [] if url.present else [self.url_env])

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        from .slack import probe_webhook

        return probe_webhook(self.url_env, timeout_s)


def checks(webhook_env: str = WEBHOOK_ENV) -> list[Any]:
    """Everything the doctor looks at, in table order."""
    from ..secretstores.doctor import checks as secret_store_checks  # issue 18: Vault, GCP, AWS
    from .providers import every

    return [SlackWebhook(webhook_env), *every(), *secret_store_checks()]


def diagnose(timeout_s: float = 5.0, webhook_env: str = WEBHOOK_ENV) -> list[Row]:
    """One row per integration; configured ones probed concurrently, each within `timeout_s`."""
    items = [(c, c.configured()) for c in checks(webhook_env)]

    def probe(item: tuple[Any, Configured]) -> Row:
        check, conf = item
        if not conf.ok:
            return Row(check.name, False, conf.settings, conf.missing, None,
                       "not configured: set " + ", ".join(f"${m}" for m in conf.missing))
        try:
            ok, detail = check.probe(timeout_s)
        except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
            ok, detail = False, f"probe failed: {type(exc).__name__}"
        return Row(check.name, True, conf.settings, [], ok, detail)

    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(probe, items))


def table(rows: list[Row]) -> str:
    """The rows as a plain-text table (settings as `NAME=shown`, credentials as fingerprints)."""
    head = ("integration", "configured", "reachable", "settings", "detail")
    body = [(r.integration, "yes" if r.configured else "no",
             "-" if r.reachable is None else "yes" if r.reachable else "NO",
             "; ".join(f"{k}={v}" for k, v in r.settings.items()), r.detail) for r in rows]
    widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head) - 1)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + str(row[-1])
             for row in (head, *body)]
    configured = sum(r.configured for r in rows)
    return "\n".join(lines) + (f"\n\n{configured} of {len(rows)} integrations configured; none is required "
                               "(messages are still drafted into the incident folder).")
