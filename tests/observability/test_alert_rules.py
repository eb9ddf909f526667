"""The alert rules: promtool accepts them, their unit tests pass, and each links to its runbook section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.prometheus import MISSING, PROMTOOL

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards" / "alerts.yaml"
RULE_TESTS = ROOT / "dashboards" / "tests" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=MISSING)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@needs_promtool
def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_the_example_prometheus_config_is_valid_and_loads_the_rules():
    result = promtool("check", "config", str(ROOT / "dashboards" / "provisioning" / "prometheus.example.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_show_the_queue_age_and_burn_rate_alerts_firing_and_not_firing():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in ("GatewayQueueOldestAgeHigh", "GatewayInteractiveErrorBudgetBurnFast",
                  "GatewayInteractiveErrorBudgetBurnSlow"):
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"no case where {alert} fires"
        assert any(not c["exp_alerts"] for c in mine), f"no case where {alert} stays quiet"
    tested = {c["alertname"] for c in cases}
    assert tested == {r["alert"] for r in rules()}, "every rule has a unit test"


def test_burn_rate_rules_follow_the_sre_workbook():
    by_name = {r["alert"]: r for r in rules()}
    fast = by_name["GatewayInteractiveErrorBudgetBurnFast"]["expr"]
    slow = by_name["GatewayInteractiveErrorBudgetBurnSlow"]["expr"]
    assert "[1h]" in fast and "[5m]" in fast and fast.count("(14.4 * 0.001)") == 2
    assert "[6h]" in slow and "[30m]" in slow and slow.count("(6 * 0.001)") == 2
    for expr in (fast, slow):
        assert 'tier="interactive"' in expr and "outcome=~" in expr and "\nand\n" in expr
    assert by_name["GatewayInteractiveErrorBudgetBurnFast"]["labels"]["severity"] == "critical"


def test_every_rule_has_severity_summary_description_and_a_runbook_that_exists():
    text = RUNBOOKS.read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        url = annotations["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md", url
        assert anchor == rule["alert"].lower() and anchor in anchors, url
        assert "for" in rule, f"{rule['alert']} would fire on a single evaluation"
    for section in re.findall(r"^## (Gateway\w+)", text, flags=re.MULTILINE):
        assert section in names, f"runbook section {section} has no alert"
    assert "gateway mode set degraded --provider" in text
