"""The provider's status from status.mistral.ai's RSS feed (Checkly-hosted; no JSON rollup).

One <item> per incident update, newest first; the description starts with `Status: X`. An
incident is ongoing while its newest update is not `Resolved`. Fetching is bounded and a feed
that cannot be read is reported as unknown, never as "all clear".
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

DEFAULT_FEED = "https://status.mistral.ai/feed.rss"  # Checkly-hosted page; RSS is its machine-readable surface
SIMULATOR_FEED_PATH = "/feed.rss"  # where the embedded Mistral simulator serves its own status feed
_STATUS = re.compile(r"Status:\s*([A-Za-z ]+?)\s*(<|$)")
_AFFECTED = re.compile(r"<li>(.*?)</li>", re.S)


@dataclass
class Update:
    title: str
    link: str
    published: str | None
    status: str
    affected: list[str]


@dataclass
class ProviderStatus:
    feed_url: str
    readable: bool
    ongoing: list[Update] = field(default_factory=list)
    latest: list[Update] = field(default_factory=list)
    error: str | None = None

    @property
    def summary(self) -> str:
        if not self.readable:
            return f"provider status unknown: {self.error}"
        if not self.ongoing:
            return "no ongoing incident on the provider's status page"
        return "ongoing: " + "; ".join(f"{u.title} ({u.status})" for u in self.ongoing)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def parse_feed(xml_text: str) -> list[Update]:
    """Items newest first, as the feed lists them."""
    root = ET.fromstring(xml_text)
    updates = []
    for item in root.iter("item"):
        desc = item.findtext("description") or ""
        match = _STATUS.search(desc)
        pub = item.findtext("pubDate")
        try:
            published = parsedate_to_datetime(pub).isoformat() if pub else None
        except (TypeError, ValueError):
            published = None
        updates.append(Update(title=(item.findtext("title") or "").strip(), link=(item.findtext("link") or "").strip(),
                              published=published, status=match.group(1).strip() if match else "Unknown",
                              affected=[a.strip() for a in _AFFECTED.findall(desc)]))
    return updates


def ongoing_incidents(updates: list[Update]) -> list[Update]:
    """The newest update of each incident (by link) whose status is not Resolved."""
    newest: dict[str, Update] = {}
    for u in updates:  # newest first: keep the first seen per incident
        newest.setdefault(u.link or u.title, u)
    return [u for u in newest.values() if u.status.lower() != "resolved"]


def feed_for(mistral_url: str) -> tuple[str, str]:
    """The status feed to read for `mistral_url`, and why: the real provider's, unless the API is local.

    A loopback API URL (127.0.0.0/8, ::1, localhost) is the embedded simulator, which serves its
    own feed at `/feed.rss`; any other URL is Mistral's API (or a proxy to it), whose status page is
    status.mistral.ai. `status_feed_url` given explicitly always wins (the caller's choice).
    """
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(mistral_url).hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if loopback:
        return (mistral_url.rstrip("/") + SIMULATOR_FEED_PATH,
                "mistral_url is a loopback address (the embedded simulator): its own status feed")
    return DEFAULT_FEED, "the provider's status page (mistral_url is not a loopback address)"


def fetch(feed_url: str = DEFAULT_FEED, timeout_s: float = 5.0) -> ProviderStatus:
    try:
        response = httpx.get(feed_url, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
        updates = parse_feed(response.text)
    except httpx.HTTPError as exc:
        return ProviderStatus(feed_url, False, error=f"{type(exc).__name__}: {exc}"[:200])
    except ET.ParseError as exc:
        return ProviderStatus(feed_url, False, error=f"not an RSS feed: {exc}")
    return ProviderStatus(feed_url, True, ongoing_incidents(updates), updates[:5])
