"""The shipped Alertmanager route, checked with the real `amtool`: every Mistral alert of the shipped
rules reaches `runbook serve` AND the team's pager; anything else reaches the pager only.

The alert names and labels are read from deploy/prometheus/mistral-rules.yml (not listed here), so a
rule added there is routed-tested too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROUTE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = ROOT / "deploy" / "prometheus" / "mistral-rules.yml"
SERVICE = {"cluster": "prod-eu", "namespace": "shop", "service": "checkout"}


def shipped_alerts() -> list[dict[str, str]]:
    """alertname + the static labels of every alerting rule in the shipped rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [{"alertname": r["alert"], **{k: str(v) for k, v in (r.get("labels") or {}).items()}}
            for g in groups for r in g["rules"] if "alert" in r]


def routes_test(amtool: str, config: Path, labels: dict[str, str]) -> list[str]:
    out = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}",
                          *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().split(",")


@pytest.fixture(scope="module")
def amtool(require_binary) -> str:
    return require_binary("amtool")


def test_amtool_check_config_accepts_the_shipped_route(amtool):
    out = subprocess.run([amtool, "check-config", str(ROUTE)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_shipped_alert_reaches_serve_and_the_pager(amtool):
    alerts = shipped_alerts()
    assert len(alerts) >= 5 and all(a["alertname"].startswith("Mistral") for a in alerts)
    answers = {a["alertname"]: routes_test(amtool, ROUTE, {**a, **SERVICE}) for a in alerts}
    assert answers == {a["alertname"]: ["runbook-serve", "team-pager"] for a in alerts}
    # without the service labels (a Prometheus whose series carry none) the routing is the same
    assert {a["alertname"]: routes_test(amtool, ROUTE, a) for a in alerts} == answers


def test_other_alerts_page_people_only(amtool):
    assert routes_test(amtool, ROUTE, {"alertname": "DiskFull", "severity": "page", **SERVICE}) == ["team-pager"]
    assert routes_test(amtool, ROUTE, {"alertname": "NotMistralServerErrors"}) == ["team-pager"]


def test_the_check_catches_a_route_that_stops_paging(amtool, tmp_path):
    """The shape shipped before: a matching child with `continue: true` and no sibling -> serve only."""
    config = yaml.safe_load(ROUTE.read_text())
    config["route"]["routes"] = config["route"]["routes"][:1]
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config))
    name = shipped_alerts()[0]["alertname"]
    assert routes_test(amtool, broken, {"alertname": name}) == ["runbook-serve"]
