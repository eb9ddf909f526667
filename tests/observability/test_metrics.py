"""The metrics contract: DESIGN.md §3 names and labels, base units, bounded labels, process and loop metrics.

The live tests read ``/metrics`` of a gateway that served real traffic; the
table tests pin the pure label functions.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Config
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    Saturated,
    UpstreamError,
)
from gateway.observability.metrics import (
    DEFERRAL_REASONS,
    LATENCY_BUCKETS,
    OUTCOMES,
    STATUS_CLASSES,
    THROTTLED,
    Metrics,
    deferral_reason,
    error_outcome,
    outcome_of,
)
from gateway.router import Outcome
from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import namespace, submit_job, wait_for
from tests.support.sdk import metric, sdk

# DESIGN.md §3, "Metrics": fixed names, with exactly these labels.
CONTRACT = {
    "gateway_requests_total": ("counter", ("tier", "model", "route", "outcome")),
    "gateway_request_duration_seconds": ("histogram", ("tier", "route")),
    "gateway_upstream_requests_total": ("counter", ("provider", "model", "status_class")),
    "gateway_upstream_duration_seconds": ("histogram", ("provider",)),
    "gateway_time_to_first_token_seconds": ("histogram", ("provider",)),
    "gateway_inflight": ("gauge", ("tier",)),
    "gateway_queue_depth": ("gauge", ("tier",)),
    "gateway_queue_oldest_age_seconds": ("gauge", ("tier",)),
    "gateway_jobs_total": ("counter", ("tier", "via", "status")),
    "gateway_provider_batches_inflight": ("gauge", ("provider",)),
    "gateway_mode": ("gauge", ("scope", "mode")),
    "gateway_mode_transitions_total": ("counter", ("scope", "from_mode", "to_mode", "source")),
    "gateway_fallbacks_total": ("counter", ("model", "from_target", "to_target")),
    "gateway_circuit_open": ("gauge", ("provider",)),
    "gateway_tokens_total": ("counter", ("provider", "model", "direction", "pricing")),
    "gateway_cost_usd_total": ("counter", ("provider", "model", "pricing")),
}
LIMITED_KEY = "sk-test-limited"
# Labels that would let requests mint series.
FORBIDDEN_LABELS = {"request_id", "job_id", "client", "key", "user", "prompt", "trace_id"}


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    config = base_config(upstream_server, redis_server.url)
    config["queue"] = {"namespace": namespace("metrics"), "mini_batch_wait_s": 0.05}
    config["auth"]["clients"].append({"name": "limited", "key": LIMITED_KEY, "tiers": ["interactive"],
                                      "default_tier": "interactive", "limits": {"rpm": 1}})
    gw = make_module_gateway(config)
    with sdk(gw, CLIENT_KEY) as c:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        list(c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert wait_for(gw, BATCH_KEY, submit_job(gw, BATCH_KEY, "chat"))["status"] == "succeeded"
    return gw


def families(gw) -> dict:
    return {f.name: f for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics", timeout=5.0).text)}


def family_name(name: str, kind: str) -> str:
    return name.removesuffix("_total") if kind == "counter" else name


def test_the_catalog_declares_the_design_contract_exactly():
    catalog = {m.name: m for m in Metrics().catalog}
    for name, (kind, labels) in CONTRACT.items():
        assert name in catalog, name
        assert (catalog[name].kind, catalog[name].labels) == (kind, labels), name


def test_every_gateway_metric_is_in_base_units_with_bounded_labels():
    for m in Metrics().catalog:
        assert m.name.startswith("gateway_"), m.name
        assert not any(unit in m.name for unit in ("_ms", "millis", "_minutes", "_hours", "_kb", "_mb")), m.name
        if m.kind == "counter":
            assert m.name.endswith("_total"), m.name
        if m.kind == "histogram":
            assert m.name.endswith("_seconds"), m.name
        assert not set(m.labels) & FORBIDDEN_LABELS, m.name
        assert m.help.strip(), m.name


def test_latency_buckets_span_5_ms_to_300_s():
    assert LATENCY_BUCKETS[0] == 0.005 and LATENCY_BUCKETS[-1] == 300.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_every_catalogued_metric_is_served_with_its_labels(gateway):
    served = families(gateway)
    catalog = Metrics().catalog
    for m in catalog:
        fam = served.get(family_name(m.name, m.kind))
        assert fam is not None, f"{m.name} is not on /metrics"
        assert fam.type == m.kind, m.name
        for sample in fam.samples:
            labels = set(sample.labels) - {"le"}
            assert labels == set(m.labels), (sample.name, sample.labels)
    # And nothing gateway_* is served that the catalog (so the docs) does not know.
    known = {family_name(m.name, m.kind) for m in catalog}
    extra = {n for n in served if n.startswith("gateway_") and n not in known and not n.endswith("_created")}
    assert extra == set()


def test_served_histograms_use_the_llm_buckets(gateway):
    fam = families(gateway)["gateway_request_duration_seconds"]
    les = sorted({float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")})
    assert les[0] == 0.005 and les[-2] == 300.0 and les[-1] == float("inf")


def test_process_cpu_memory_and_event_loop_lag_are_exported(gateway):
    served = families(gateway)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_start_time_seconds"):
        assert name in served, name
    assert metric(gateway, "process_resident_memory_bytes") > 10_000_000
    before = metric(gateway, "gateway_event_loop_lag_seconds_count")
    time.sleep(0.6)  # the sampler wakes four times a second
    assert metric(gateway, "gateway_event_loop_lag_seconds_count") >= before + 1
    assert metric(gateway, "gateway_event_loop_lag_seconds_sum") < metric(gateway, "gateway_event_loop_lag_seconds_count")


def test_made_up_model_names_and_request_ids_do_not_mint_series(gateway):
    def series() -> int:
        return sum(len(f.samples) for n, f in families(gateway).items() if n.startswith("gateway_"))

    with sdk(gateway, CLIENT_KEY) as c:
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="bogus-0", messages=[{"role": "user", "content": "x"}])
        before = series()
        for i in range(1, 8):
            with pytest.raises(openai.NotFoundError):
                c.chat.completions.create(model=f"bogus-{i}", messages=[{"role": "user", "content": "x"}],
                                          extra_headers={"X-Request-Id": f"rid-{i}"})
    assert series() == before
    text = httpx.get(gateway.url + "/metrics").text
    assert "bogus" not in text and "rid-" not in text
    assert metric(gateway, "gateway_requests_total", model="-", outcome="client_error") == 8


def test_config_figures_and_zeroed_gauges_are_there_from_the_start(gateway, upstream_server, redis_server):
    config = Config.model_validate(base_config(upstream_server, redis_server.url))
    for tier, t in config.tiers.items():
        assert metric(gateway, "gateway_tier_max_delay_seconds", tier=tier) == t.max_delay_s
        assert families(gateway)["gateway_queue_depth"].samples  # primed per tier
    for edge in ("enter", "exit"):
        t = getattr(config.degradation, edge)
        assert metric(gateway, "gateway_degradation_p95_latency_threshold_seconds", edge=edge) == t.p95_latency_s
        assert metric(gateway, "gateway_degradation_rate_limited_ratio_threshold", edge=edge) == t.rate_limited_ratio
        assert metric(gateway, "gateway_degradation_error_ratio_threshold", edge=edge) == t.error_ratio
    circuits = {s.labels["provider"] for s in families(gateway)["gateway_circuit_open"].samples}
    assert circuits == {"primary", "secondary"}
    batches = {s.labels["provider"] for s in families(gateway)["gateway_provider_batches_inflight"].samples}
    assert batches == {"primary", "secondary"}
    assert "gateway_dead_letters" in families(gateway)
    assert metric(gateway, "gateway_build_info") == 1


def test_deferrals_and_jobs_are_counted(gateway):
    assert metric(gateway, "gateway_deferrals_total", tier="background", reason="async_tier") >= 1
    assert metric(gateway, "gateway_jobs_total", tier="background", via="minibatch", status="succeeded") >= 1


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "success"), (201, "success"), (202, "accepted"), (400, "client_error"), (401, "client_error"),
    (404, "client_error"), (413, "client_error"), (429, "rate_limited"), (499, "cancelled"), (500, "error"),
    (502, "error"), (503, "error"), (504, "timeout"),
])
def test_outcome_of(status, outcome):
    assert outcome_of(status) == outcome


def test_outcome_of_only_returns_documented_values():
    assert {outcome_of(s) for s in range(100, 600)} | {THROTTLED} == set(OUTCOMES)


@pytest.mark.parametrize(("error", "outcome"), [
    (RateLimited("over the client's limit"), "throttled"),
    (Saturated("no slot"), None),
    (UpstreamError("upstream failed"), None),
    (InvalidRequest("bad"), None),
])
def test_error_outcome_tells_a_clients_own_limit_from_saturation(error: GatewayError, outcome):
    assert error.status == 429 or outcome is None
    assert error_outcome(error) == outcome


def test_a_client_over_its_own_rate_limit_is_throttled_not_rate_limited(gateway):
    statuses = [httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {LIMITED_KEY}"},
                           json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}).status_code
                for _ in range(3)]
    assert 429 in statuses, statuses
    assert metric(gateway, "gateway_requests_total", tier="interactive", outcome="throttled") == statuses.count(429)
    assert metric(gateway, "gateway_requests_total", tier="interactive", outcome="rate_limited") == 0


@pytest.mark.parametrize(("path", "tier_async", "mode", "reason"), [
    ("async", False, "normal", "requested"),
    ("async", True, "normal", "async_tier"),
    ("async", True, "degraded", "async_tier"),
    ("hold", False, "degraded", "mode"),
    ("hold", False, "shed", "mode"),
    ("hold", False, "normal", "saturated"),
    ("hold", False, None, "saturated"),
])
def test_deferral_reason(path, tier_async, mode, reason):
    assert deferral_reason(path, tier_async, mode) == reason
    assert reason in DEFERRAL_REASONS


@pytest.mark.parametrize(("status", "timeout", "cls"), [
    (200, False, "2xx"), (400, False, "4xx"), (429, False, "429"), (500, False, "5xx"), (503, False, "5xx"),
    (None, True, "timeout"), (None, False, "error"),
])
def test_upstream_status_classes_are_the_documented_ones(status, timeout, cls):
    outcome = Outcome("p", "m", status, timeout, 0.1)
    assert outcome.status_class == cls
    assert cls in STATUS_CLASSES
