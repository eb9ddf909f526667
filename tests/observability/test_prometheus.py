"""Every dashboard query and alert rule, evaluated by a real Prometheus scraping a live gateway.

The gateway serves some of everything first (a success, a stream, a 429 fallback,
a 502, a 404, async and held jobs, an operator mode change), so the series the
panels read exist. Each panel query must parse, name only metrics the gateway
exports, and return data: no dead panels. Each alert rule must parse, name only
exported metrics, and be loaded and evaluated by Prometheus without error.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import Metrics
from tests.conftest import (
    ADMIN_KEY,
    BATCH_KEY,
    CLIENT_KEY,
    base_config,
    fallback_models,
)
from tests.support.jobs import namespace, submit_job, wait_for
from tests.support.prometheus import (
    MISSING,
    PROMETHEUS,
    PROMTOOL,
    PrometheusServer,
    grafana_expr,
    metric_names,
)
from tests.support.sdk import sdk
from tests.support.upstream import Behaviour

pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=MISSING)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
ALERTS = DASHBOARDS / "alerts.yaml"


def panel_targets() -> list[tuple[str, str, str]]:
    """(id, panel title, expr) for every query target of every panel of every dashboard."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        panels = list(board["panels"])
        for row in board["panels"]:
            panels.extend(row.get("panels", []))  # collapsed rows keep their panels inside
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}:{panel['title']}:{target['refId']}", panel["title"], target["expr"]))
    return out


def variable_queries() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.stem}:{var['name']}", var["definition"]))
    return out


def alert_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


PANELS = panel_targets()
RULES = alert_rules()


@functools.cache
def registry_names() -> frozenset[str]:
    """Every sample name the ``Metrics`` registry can expose (histograms with their series)."""
    metrics = Metrics()
    names = set()
    for info in metrics.catalog:
        if info.kind == "histogram":
            names |= {info.name + "_bucket", info.name + "_sum", info.name + "_count"}
        else:
            names.add(info.name)
    for family in metrics.registry.collect():
        names |= {s.name for s in family.samples}
    return frozenset(names)


def exported_names(gw: Any) -> set[str]:
    """Sample names on the live gateway's ``/metrics``, with the family names of labelled metrics not yet touched."""
    text = httpx.get(gw.url + "/metrics", timeout=5.0).text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def drive_traffic(gw: Any, upstream: Any) -> None:
    with sdk(gw, CLIENT_KEY) as web:
        serve_some_of_everything(gw, web, upstream)


def serve_some_of_everything(gw: Any, web: openai.OpenAI, upstream: Any) -> None:
    hello = [{"role": "user", "content": "hello"}]
    web.chat.completions.create(model="chat", messages=hello)
    list(web.chat.completions.create(model="chat", messages=hello, stream=True))
    web.embeddings.create(model="embed", input="hello")
    upstream.default("p-obs-fb", Behaviour(status=429))
    assert web.chat.completions.with_raw_response.create(model="obs-fb", messages=hello).headers[
        "x-gateway-target"] == "secondary/s-obs-fb"
    upstream.default("p-obs-down", Behaviour(status=500))
    upstream.default("s-obs-down", Behaviour(status=500))
    with pytest.raises(openai.InternalServerError):
        web.chat.completions.create(model="obs-down", messages=hello)
    with pytest.raises(openai.NotFoundError):
        web.chat.completions.create(model="no-such-model", messages=hello)
    jobs = [submit_job(gw, BATCH_KEY, "chat"),  # the background tier is async: reason async_tier
            submit_job(gw, CLIENT_KEY, "chat")]  # Prefer: respond-async on an interactive key: reason requested
    for job in jobs:
        assert wait_for(gw, BATCH_KEY if job == jobs[0] else CLIENT_KEY, job)["status"] == "succeeded"
    r = httpx.put(gw.url + "/admin/mode", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10.0,
                  json={"mode": "degraded", "provider": "primary", "ttl_s": 600, "reason": "observability test"})
    assert r.status_code == 200, r.text
    # The standard tier is deferrable: with its model's first provider degraded, it is held (reason mode).
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": hello}, timeout=10.0,
                   headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Gateway-Tier": "standard"})
    assert r.status_code in (200, 503), r.text
    assert r.headers.get("x-gateway-job-id") or r.headers.get("x-gateway-deferred") == "true"


@dataclass(frozen=True)
class Scraped:
    gw: Any
    prom: PrometheusServer
    exported: set[str]  # sample names on the gateway's /metrics once the traffic was served


@pytest.fixture(scope="module")
def scraped(make_module_gateway, upstream_server, redis_server, tmp_path_factory):
    config = base_config(upstream_server, redis_server.url)
    config["models"].update(fallback_models("obs-fb", "obs-down"))
    config["queue"] = {"namespace": namespace("obs"), "mini_batch_wait_s": 0.05}
    gw = make_module_gateway(config)
    prom = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{gw.port}"], [ALERTS]).start()
    try:
        drive_traffic(gw, upstream_server)
        # The last series to appear has been scraped at least twice, so rates over it have two points.
        deadline = time.monotonic() + 20
        while (prom.value('count_over_time(gateway_deferrals_total{reason="mode"}[1m])') or 0) < 2:
            assert time.monotonic() < deadline, f"prometheus never scraped the traffic:\n{prom.log()}"
            time.sleep(0.2)
        yield Scraped(gw, prom, exported_names(gw))
    finally:
        prom.stop()


def test_the_metric_name_extractor_reads_prometheus_formatting():
    formatted = ('histogram_quantile(0.95, sum by (tier, le) (rate(a_bucket{job=~".*",x="rate(b)"}[1m])))'
                 ' / on (tier) group_left () max without (instance) (c offset 5m) > bool 1e3'
                 ' or vector(0) and d[5m:1m] unless {__name__="e"}')
    assert metric_names(formatted) == {"a_bucket", "c", "d", "e"}
    assert grafana_expr('rate(x{job=~"$job",p=~"${provider}"}[$__rate_interval])') == 'rate(x{job=~".*",p=~".*"}[1m])'


def test_there_is_a_panel_for_each_part_of_the_brief():
    boards = {i.split(":")[0] for i, _, _ in PANELS}
    assert boards == {"overview", "queue", "providers", "cost"}
    assert len(PANELS) >= 40
    assert {name for name, _ in RULES} >= {
        "GatewayQueueOldestAgeHigh", "GatewayDegradedModeActive", "GatewayInteractiveErrorBudgetBurnFast",
        "GatewayInteractiveErrorBudgetBurnSlow", "GatewayDeadLettersGrowing", "GatewayProviderCircuitOpen",
    }


@pytest.mark.parametrize(("title", "expr"), [(t, e) for _, t, e in PANELS], ids=[i for i, _, _ in PANELS])
def test_every_panel_query_parses_refers_to_exported_metrics_and_has_data(scraped, title, expr):
    prom, exported = scraped.prom, scraped.exported
    query = grafana_expr(expr)
    names = metric_names(prom.format_query(query))
    assert names, f"{title}: the query names no metric: {query}"
    assert names <= exported, f"{title}: not exported by the gateway: {sorted(names - exported)}"
    assert names <= registry_names(), f"{title}: not in the Metrics registry: {sorted(names - registry_names())}"
    deadline = time.monotonic() + 5
    while not (result := prom.query(query)):
        assert time.monotonic() < deadline, f"{title}: a dead panel, no data for {query}"
        time.sleep(0.25)
    assert all(len(sample["value"]) == 2 for sample in result)


@pytest.mark.parametrize(("name", "definition"), variable_queries(), ids=[i for i, _ in variable_queries()])
def test_every_variable_query_lists_values(scraped, name, definition):
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition)
    assert m, f"{name}: unexpected variable query {definition}"
    metric, label = m.groups()
    assert metric in scraped.exported
    assert scraped.prom.api(f"label/{label}/values", **{"match[]": metric}), f"{name}: no values for {definition}"


@pytest.mark.parametrize(("alert", "expr"), RULES, ids=[name for name, _ in RULES])
def test_every_alert_rule_parses_and_refers_to_exported_metrics(scraped, alert, expr):
    names = metric_names(scraped.prom.format_query(expr))
    assert names, alert
    assert names <= scraped.exported, f"{alert}: not exported: {sorted(names - scraped.exported)}"
    assert names <= registry_names()
    scraped.prom.query(expr)  # evaluates (not firing: an empty vector is the healthy answer)


def test_prometheus_loads_and_evaluates_every_rule_without_error(scraped):
    prom = scraped.prom
    deadline = time.monotonic() + 10
    while True:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") and r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.2)
    assert sorted(r["name"] for r in rules) == sorted(name for name, _ in RULES)
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules
    firing = [a for r in rules for a in r.get("alerts", []) if a["state"] == "firing"]
    assert firing == []  # a few seconds of traffic trip no alert: every one has a `for`


def test_scraped_values_match_the_traffic(scraped):
    prom = scraped.prom
    assert prom.value('sum(gateway_fallbacks_total{model="obs-fb",from_target="primary/p-obs-fb",'
                      'to_target="secondary/s-obs-fb"})') == 1
    assert prom.value('sum(gateway_upstream_requests_total{model="p-obs-fb",status_class="429"})') == 2
    assert prom.value('sum(gateway_requests_total{model="obs-down",outcome="error"})') == 1
    assert prom.value('sum(gateway_requests_total{model="-",outcome="client_error"})') == 1
    assert prom.value('sum(gateway_jobs_total{via="minibatch",status="succeeded"})') >= 2
    assert prom.value('sum(gateway_deferrals_total{tier="background",reason="async_tier"})') == 1
    assert prom.value('sum(gateway_deferrals_total{tier="interactive",reason="requested"})') == 1
    assert prom.value('sum(gateway_deferrals_total{tier="standard",reason="mode"})') == 1
    assert prom.value('gateway_mode{scope="primary",mode="degraded"}') == 1
    assert prom.value('sum(gateway_mode_transitions_total{scope="primary",from_mode="normal",to_mode="degraded",'
                      'source="operator"})') == 1
    assert prom.value("sum(gateway_time_to_first_token_seconds_count)") >= 1
    assert prom.value("process_resident_memory_bytes") > 10_000_000
    assert prom.value("process_cpu_seconds_total") > 0
    assert prom.value("gateway_event_loop_lag_seconds_count") > 0
