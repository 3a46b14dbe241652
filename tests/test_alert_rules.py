"""Per-service alerting rules: the shipped file is `runbook rules` with the defaults, the real promtool
checks it and runs its unit tests (two services, one failing; the auth traffic guard), and the unit
tests are shown to catch rules that merge services or lose the guard."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbook_lib.serve.rules import RulesConfig, render_rules

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
RUNBOOK = Path(sys.executable).parent / "runbook"


@pytest.fixture(scope="module")
def promtool(require_binary) -> str:
    return require_binary("promtool")


def _unit_tests_against(promtool: str, rules_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run the shipped promtool unit tests against another rendering of the rules."""
    (folder / "mistral-rules.yml").write_text(rules_text)
    shutil.copy(DEPLOY / "mistral-rules.test.yml", folder / "mistral-rules.test.yml")
    return subprocess.run([promtool, "test", "rules", "mistral-rules.test.yml"], cwd=folder, capture_output=True,
                          text=True, timeout=60)


def test_shipped_rules_are_the_generated_defaults():
    assert (DEPLOY / "mistral-rules.yml").read_text() == render_rules()
    out = subprocess.run([str(RUNBOOK), "rules"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == (DEPLOY / "mistral-rules.yml").read_text(), out.stderr


def test_every_rule_aggregates_by_the_service_labels_with_an_absolute_runbook_url():
    rules = yaml.safe_load((DEPLOY / "mistral-rules.yml").read_text())["groups"][0]["rules"]
    assert len(rules) == 5
    for rule in rules:
        assert "sum(" not in rule["expr"].replace(" ", "")  # nothing aggregates every service together
        assert rule["expr"].count("sum by (cluster, namespace, service") >= 1, rule["expr"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://git.example.com/ops/mistral-runbooks/blob/main/notebooks/{rule['annotations']['runbook']}.ipynb"


def test_promtool_unit_tests_pass_on_the_shipped_rules(promtool, tmp_path):
    out = _unit_tests_against(promtool, render_rules(), tmp_path)
    assert out.returncode == 0 and "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("config, broken", [
    (RulesConfig(service_labels=("cluster",)), "services merged"),
    (RulesConfig(auth_min_requests=1), "auth guard too low"),
    (RulesConfig(runbook_base_url="https://other.example.org/x"), "another runbook_url"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_promtool_unit_tests_catch_broken_rules(promtool, tmp_path, config, broken):
    out = _unit_tests_against(promtool, render_rules(config), tmp_path)
    assert out.returncode != 0, f"{broken}: promtool accepted\n{out.stdout}"
    assert "FAILED" in out.stdout + out.stderr


def test_runbook_rules_renders_other_labels_and_base_url(promtool, tmp_path):
    path = tmp_path / "rules.yml"
    out = subprocess.run([str(RUNBOOK), "rules", "--service-labels", "namespace,app", "--runbook-base-url",
                          "https://gitlab.example.net/sre/runbooks/-/blob/main/", "--auth-min-requests", "50",
                          "-o", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    rules = {r["alert"]: r for r in yaml.safe_load(path.read_text())["groups"][0]["rules"]}
    assert "sum by (namespace, app) (increase(mistral_requests_total[5m])) >= 50" in rules["MistralAuthFailures"]["expr"]
    assert "sum by (namespace, app, le)" in rules["MistralLatencyP95High"]["expr"]
    assert rules["MistralServerErrors"]["annotations"]["runbook_url"] == \
        "https://gitlab.example.net/sre/runbooks/-/blob/main/notebooks/diagnose_server_error.ipynb"


@pytest.mark.parametrize("args, option", [
    (["--service-labels", ""], "--service-labels"),
    (["--service-labels", "namespace,namespace"], "--service-labels"),
    (["--service-labels", "namespace,code"], "--service-labels"),
    (["--service-labels", "__name__"], "--service-labels"),
    (["--service-labels", "name-space"], "--service-labels"),
    (["--runbook-base-url", "notebooks/"], "--runbook-base-url"),
    (["--auth-min-requests", "0"], "--auth-min-requests"),
])
def test_runbook_rules_refuses_bad_options_naming_them(args, option, tmp_path):
    out = subprocess.run([str(RUNBOOK), "rules", *args, "-o", str(tmp_path / "r.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and f"'{option}'" in out.stderr, out.stderr
    assert not (tmp_path / "r.yml").exists()
