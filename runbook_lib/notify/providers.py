"""The integrations this package knows, in the order an update is told: one list for dispatch and the doctor."""

from __future__ import annotations

from .base import Provider
from .pagerduty import PagerDuty
from .slack import SlackWebApi
from .statuspage import Statuspage


def every() -> list[Provider]:
    """Every provider (configured or not): the Slack thread first (the team), then the pager, then the public
    page, then the Grafana dashboard's annotations (detection, mitigation, resolution)."""
    from ..grafana.provider import GrafanaAnnotations

    return [SlackWebApi(), PagerDuty(), Statuspage(), GrafanaAnnotations()]


def configured() -> list[Provider]:
    """The providers whose variables are set (`runbook doctor` shows which and why)."""
    return [p for p in every() if p.configured().ok]
