"""Probes: liveness, readiness (Redis reachable), and the Prometheus scrape."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_KEY, base_config
from tests.support.net import free_port
from tests.support.sdk import sdk

FIXED_NAMES = {
    "gateway_requests", "gateway_request_duration_seconds", "gateway_upstream_requests",
    "gateway_upstream_duration_seconds", "gateway_time_to_first_token_seconds", "gateway_inflight",
    "gateway_queue_depth", "gateway_queue_oldest_age_seconds", "gateway_jobs", "gateway_provider_batches_inflight",
    "gateway_mode", "gateway_mode_transitions", "gateway_fallbacks", "gateway_circuit_open", "gateway_tokens",
    "gateway_cost_usd",
}


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(base_config(upstream_server, redis_server.url))


@pytest.fixture(scope="module")
def gateway_without_redis(make_module_gateway, upstream_server):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    return make_module_gateway(base_config(upstream_server, dead, redis={"url": dead, "private": "never"}))


def test_healthz(gateway):
    r = httpx.get(gateway.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_when_redis_answers(gateway):
    r = httpx.get(gateway.url + "/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["redis"] == "ok"


def test_readyz_is_503_while_redis_is_unreachable(gateway_without_redis, upstream):
    gw = gateway_without_redis
    r = httpx.get(gw.url + "/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and r.json()["redis"] == "unreachable"
    # Alive all the same, and the synchronous path needs no Redis: it keeps serving.
    assert httpx.get(gw.url + "/healthz").status_code == 200
    reply = sdk(gw, CLIENT_KEY).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert "does not answer" in gw.log()  # the operator is told at start-up


def test_metrics_expose_the_fixed_names(gateway, upstream):
    sdk(gateway, CLIENT_KEY).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(gateway.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert FIXED_NAMES <= set(families), FIXED_NAMES - set(families)
    requests = [s for s in families["gateway_requests"].samples if s.name == "gateway_requests_total"]
    assert any(s.labels == {"tier": "interactive", "model": "chat", "route": "chat.completions", "outcome": "success"}
               and s.value >= 1 for s in requests)
    buckets = [s for s in families["gateway_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert max(float(s.labels["le"]) for s in buckets if s.labels["le"] != "+Inf") == 300.0
