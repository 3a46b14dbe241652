"""What kind of 429 this is, and how much concurrency the observed limits allow.

Mistral sends `x-ratelimit-{limit,remaining}-{req,tokens}-minute` and the monthly quota's
`x-ratelimit-{limit,remaining}-{req,tokens}-month` (+ `x-ratelimit-reset-tokens-month`, seconds)
(2026 names; undocumented) and
429 bodies that tell `rate_limited` (code 1300: our workspace's limit) from "Service tier capacity
exceeded for this model" (Mistral's side, our counters still have room). The recommendation uses
Little's law: concurrency = sustainable requests/s x seconds per request, with headroom.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LIMITS_PAGE = "https://admin.mistral.ai/plateforme/limits"
HEADROOM = 0.8  # aim below the limit: bursts and other clients share it

REQUEST_LIMIT, TOKEN_LIMIT, MONTHLY_QUOTA, CAPACITY, NONE, UNKNOWN = (
    "request_limit", "token_limit", "monthly_quota", "capacity_exceeded", "no_limit_hit", "unknown")


def _int(headers: dict[str, str], name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Limits:
    req_limit_minute: int | None
    req_remaining_minute: int | None
    tokens_limit_minute: int | None
    tokens_remaining_minute: int | None
    reset_s: int | None
    # the monthly quota (absent from older gateways: None, never 0)
    req_limit_month: int | None = None
    req_remaining_month: int | None = None
    tokens_limit_month: int | None = None
    tokens_remaining_month: int | None = None
    tokens_reset_month_s: int | None = None

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> Limits:
        h = {k.lower(): v for k, v in headers.items()}
        return cls(_int(h, "x-ratelimit-limit-req-minute"), _int(h, "x-ratelimit-remaining-req-minute"),
                   _int(h, "x-ratelimit-limit-tokens-minute"), _int(h, "x-ratelimit-remaining-tokens-minute"),
                   _int(h, "x-ratelimit-reset-req-minute"),
                   _int(h, "x-ratelimit-limit-req-month"), _int(h, "x-ratelimit-remaining-req-month"),
                   _int(h, "x-ratelimit-limit-tokens-month"), _int(h, "x-ratelimit-remaining-tokens-month"),
                   _int(h, "x-ratelimit-reset-tokens-month"))

    @property
    def monthly_exhausted(self) -> bool:
        """The month's requests or tokens are used up: no per-minute reset brings them back."""
        return self.req_remaining_month == 0 or self.tokens_remaining_month == 0


def kind_of_limit(classes: list[str], limits: Limits) -> str:
    """Tell request limits from token limits from provider capacity, from the sample."""
    if "capacity_exceeded" in classes and "rate_limited" not in classes:
        return CAPACITY
    if "rate_limited" in classes:
        if limits.monthly_exhausted:
            return MONTHLY_QUOTA
        if limits.tokens_remaining_minute == 0 and (limits.req_remaining_minute or 0) > 0:
            return TOKEN_LIMIT
        if limits.req_remaining_minute == 0 or limits.req_limit_minute == 0:
            return REQUEST_LIMIT
        if limits.tokens_remaining_minute is not None and limits.tokens_limit_minute and \
                limits.tokens_remaining_minute < 0.01 * limits.tokens_limit_minute:
            return TOKEN_LIMIT
        return UNKNOWN
    return NONE


@dataclass
class Recommendation:
    max_concurrent_requests: int | None
    arithmetic: list[str] = field(default_factory=list)
    caveat: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend_concurrency(limits: Limits, *, latency_s: float | None, tokens_per_request: float | None = None,
                          current_rps: float | None = None, headroom: float = HEADROOM) -> Recommendation:
    """MAX_CONCURRENT_REQUESTS from the limits and the observed latency, arithmetic shown."""
    steps: list[str] = []
    if not latency_s or latency_s <= 0:
        return Recommendation(None, steps, "no latency measurement: cannot apply Little's law")
    candidates = []
    if limits.req_limit_minute:
        rps = limits.req_limit_minute / 60 * headroom
        steps.append(f"request limit {limits.req_limit_minute}/min / 60 x {headroom:g} headroom = {rps:.2f} req/s")
        candidates.append(rps)
    if limits.tokens_limit_minute and tokens_per_request:
        rps = limits.tokens_limit_minute / 60 / tokens_per_request * headroom
        steps.append(f"token limit {limits.tokens_limit_minute}/min / 60 / {tokens_per_request:.0f} tokens per request "
                     f"x {headroom:g} = {rps:.2f} req/s")
        candidates.append(rps)
    if not candidates:
        return Recommendation(None, steps, "no usable limit in the headers (a limit of 0 means the workspace is "
                                            f"blocked for now: check {LIMITS_PAGE})")
    sustainable = min(candidates)
    concurrency = max(1, math.floor(sustainable * latency_s))
    steps.append(f"sustainable {sustainable:.2f} req/s x {latency_s:.2f} s per request (Little's law) "
                 f"= {sustainable * latency_s:.2f} -> {concurrency} concurrent request(s)")
    caveat = None
    if current_rps is not None:
        steps.append(f"current traffic {current_rps:.2f} req/s is {current_rps / sustainable:.0%} of the sustainable rate")
        if current_rps > sustainable:
            caveat = "current traffic exceeds the limit: queue (RATE_LIMIT_MODE=queue) or ask Mistral for more"
    return Recommendation(concurrency, steps, caveat)
