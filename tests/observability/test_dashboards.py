"""The Grafana dashboards keep to the classic dashboard model and to their generator.

What Grafana needs to load them: unique panel ids, a grid of 24 columns without
overlaps, a Prometheus ``${datasource}`` variable used by every panel and
query, stable uids. What the queries mean is checked against a real Prometheus
in test_prometheus.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
UIDS = {"overview.json": "gateway-overview", "queue.json": "gateway-queue", "providers.json": "gateway-providers",
        "cost.json": "gateway-cost"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def boards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def exprs(board: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for p in all_panels(board) for t in p.get("targets", []))


def test_the_json_is_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_each_dashboard_has_its_stable_uid():
    assert {name: b["uid"] for name, b in boards().items()} == UIDS
    assert all(len(uid) <= 40 for uid in UIDS.values())


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_model(name):
    board = boards()[name]
    assert board["schemaVersion"] == 39
    assert board["id"] is None and isinstance(board["version"], int)
    assert board["title"].startswith("LLM gateway / ") and "llm-gateway" in board["tags"]
    assert set(board["time"]) == {"from", "to"} and board["refresh"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE
            assert var["query"]["query"] == var["definition"]
    ids = [p["id"] for p in all_panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(board):
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"]
        pos = panel["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert {"defaults", "overrides"} <= set(panel["fieldConfig"]) and "options" in panel
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip()
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])


def test_the_panels_cover_the_brief():
    b = boards()
    overview, queue, providers, cost = (exprs(b[n]) for n in ("overview.json", "queue.json", "providers.json",
                                                              "cost.json"))
    for needle in ("gateway_requests_total", "gateway_request_duration_seconds_bucket", "gateway_mode{",
                   "gateway_deferrals_total", "gateway_fallbacks_total", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "gateway_event_loop_lag_seconds_bucket"):
        assert needle in overview, needle
    for needle in ("gateway_queue_depth", "gateway_queue_oldest_age_seconds", "gateway_jobs_total",
                   "gateway_dead_letters", "gateway_provider_batches_inflight", "sum by (via, status)"):
        assert needle in queue, needle
    for needle in ("gateway_upstream_duration_seconds_bucket", "gateway_time_to_first_token_seconds_bucket",
                   'status_class="429"', 'status_class=~"5xx|timeout|error"', "gateway_circuit_open",
                   "gateway_degradation_p95_latency_threshold_seconds",
                   "gateway_degradation_rate_limited_ratio_threshold", "gateway_degradation_error_ratio_threshold"):
        assert needle in providers, needle
    for needle in ('pricing="realtime"', 'pricing="batch"', "gateway_cost_baseline_usd_total",
                   "gateway_metered_requests_total", "sum by (pricing)"):
        assert needle in cost, needle
    modes = [p for p in all_panels(b["overview.json"]) if p["type"] == "state-timeline"]
    assert modes and modes[0]["fieldConfig"]["defaults"]["mappings"][0]["options"]["2"]["text"] == "shed"


def test_provisioning_files():
    dashboards = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards.yaml").read_text())
    assert dashboards["apiVersion"] == 1
    provider = dashboards["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
    datasources = yaml.safe_load((DASHBOARDS / "provisioning" / "datasource.example.yaml").read_text())
    assert datasources["apiVersion"] == 1
    assert datasources["datasources"][0]["type"] == "prometheus"
