"""The chart's copies of the alert rules and dashboards equal their source in dashboards/.

Helm reads only files inside the chart, so helm/gateway/files/ holds copies;
helm/sync-chart-files.sh refreshes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.chart import CHART, ROOT

SOURCE = ROOT / "dashboards"
COPIES = CHART / "files"
FIX = "run helm/sync-chart-files.sh"


def _source(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist yet, so there is nothing to compare the chart's copy with")
    return path


def test_alert_rules_copy_equals_source() -> None:
    source = _source(SOURCE / "alerts.yaml")
    assert (COPIES / "alerts.yaml").read_bytes() == source.read_bytes(), f"helm/gateway/files/alerts.yaml is stale: {FIX}"


def test_dashboard_copies_equal_source() -> None:
    _source(SOURCE)
    sources = {p.name: p for p in SOURCE.glob("*.json")}
    if not sources:
        pytest.skip("dashboards/ holds no *.json yet")
    copies = {p.name: p for p in (COPIES / "dashboards").glob("*.json")}
    assert sorted(copies) == sorted(sources), f"the chart's dashboards differ from dashboards/*.json: {FIX}"
    for name, path in sources.items():
        assert copies[name].read_bytes() == path.read_bytes(), f"helm/gateway/files/dashboards/{name} is stale: {FIX}"
