"""Cost accounting against hand-computed figures: realtime requests, a provider-batch job, and the arithmetic.

Prices in these configs: input 1.0 and output 2.0 dollars per million tokens,
batch discount 0.5. The fake upstream reports 7 prompt and 5 completion tokens
for every answer; the simulator counts a token per 4 prompt characters.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.circuit import Circuit
from gateway.config import Config, PricingConfig
from gateway.cost import Pricing, cost_usd
from gateway.providers.base import Usage
from gateway.router import Target
from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.gateway_proc import GatewayProcess
from tests.support.jobs import namespace, submit_job, wait_for
from tests.support.sdk import metric, sdk

PRICES = PricingConfig(input_per_mtok=1.0, output_per_mtok=2.0, batch_discount=0.5)
REALTIME_7_5 = (7 * 1.0 + 5 * 2.0) / 1_000_000  # 1.7e-05 dollars


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


@pytest.mark.parametrize(("usage", "kind", "usd"), [
    (Usage(7, 5), Pricing.REALTIME, 17e-6),
    (Usage(7, 5), Pricing.BATCH, 8.5e-6),
    (Usage(1_000_000, 0), Pricing.REALTIME, 1.0),
    (Usage(0, 1_000_000), Pricing.BATCH, 1.0),
    (Usage(0, 0), Pricing.REALTIME, 0.0),
])
def test_cost_usd(usage, kind, usd):
    assert cost_usd(PRICES, usage, kind) == pytest.approx(usd)


def test_a_full_discount_makes_batches_free():
    assert cost_usd(PricingConfig(input_per_mtok=3.0, batch_discount=1.0), Usage(10, 10), Pricing.BATCH) == 0.0


def test_meter_counts_batch_usage_at_the_discount_and_its_realtime_baseline(upstream_server, redis_server):
    gw = Gateway(Config.model_validate(base_config(upstream_server, redis_server.url)))
    target = Target("primary", "p-chat", Circuit(3, 1.0))
    assert gw.meter("chat", target, Usage(7, 5), batch=True) == pytest.approx(8.5e-6)
    assert gw.meter("chat", target, Usage(7, 5), batch=False) == pytest.approx(17e-6)
    assert gw.meter("chat", target, None, batch=False) == 0.0
    text = gw.metrics.render().decode()
    labels = {"provider": "primary", "model": "p-chat"}
    assert sample(text, "gateway_cost_usd_total", **labels, pricing="batch") == pytest.approx(8.5e-6)
    assert sample(text, "gateway_cost_baseline_usd_total", **labels, pricing="batch") == pytest.approx(17e-6)
    assert sample(text, "gateway_cost_usd_total", **labels, pricing="realtime") == pytest.approx(17e-6)
    assert sample(text, "gateway_cost_baseline_usd_total", **labels, pricing="realtime") == pytest.approx(17e-6)
    for pricing in ("batch", "realtime"):
        assert sample(text, "gateway_tokens_total", **labels, direction="input", pricing=pricing) == 7
        assert sample(text, "gateway_tokens_total", **labels, direction="output", pricing=pricing) == 5
        assert sample(text, "gateway_metered_requests_total", **labels, pricing=pricing) == 1


def test_realtime_requests_are_metered_at_list_prices(make_gateway, upstream, redis_server):
    config = base_config(upstream, redis_server.url)
    config["queue"] = {"namespace": namespace("cost"), "mini_batch_wait_s": 0.05}
    gw = make_gateway(config)
    labels = {"provider": "primary", "model": "p-chat"}
    with sdk(gw, CLIENT_KEY) as c:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert metric(gw, "gateway_tokens_total", **labels, direction="input", pricing="realtime") == 7
        assert metric(gw, "gateway_tokens_total", **labels, direction="output", pricing="realtime") == 5
        assert metric(gw, "gateway_cost_usd_total", **labels, pricing="realtime") == pytest.approx(REALTIME_7_5)
        # A stream whose client did not ask for usage is metered all the same.
        list(c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert metric(gw, "gateway_cost_usd_total", **labels, pricing="realtime") == pytest.approx(2 * REALTIME_7_5)
    # A deferred job drained by a mini-batch runs on a realtime endpoint: realtime prices.
    assert wait_for(gw, BATCH_KEY, submit_job(gw, BATCH_KEY, "chat"))["via"] == "minibatch"
    assert metric(gw, "gateway_tokens_total", **labels, direction="input", pricing="realtime") == 21
    assert metric(gw, "gateway_tokens_total", **labels, direction="output", pricing="realtime") == 15
    assert metric(gw, "gateway_cost_usd_total", **labels, pricing="realtime") == pytest.approx(3 * REALTIME_7_5)
    assert metric(gw, "gateway_cost_baseline_usd_total", **labels, pricing="realtime") == pytest.approx(3 * REALTIME_7_5)
    assert metric(gw, "gateway_metered_requests_total", **labels, pricing="realtime") == 3
    assert metric(gw, "gateway_cost_usd_total", **labels, pricing="batch") == 0.0
    # The embeddings model has no pricing: its tokens are counted, and cost nothing.
    with sdk(gw, CLIENT_KEY) as c:
        c.embeddings.create(model="embed", input="hi")
    assert metric(gw, "gateway_tokens_total", provider="primary", model="p-embed", direction="input",
                  pricing="realtime") == 7
    assert metric(gw, "gateway_cost_usd_total", provider="primary", model="p-embed", pricing="realtime") == 0.0


@pytest.fixture
def simulator(tmp_path):
    sim = GatewayProcess(tmp_path, None, command="simulator", args=("--latency-ms", "1", "--output-tokens", "40"))
    sim.start(wait="/v1/models")
    httpx.put(sim.url + "/_sim/behaviour", json={"batch_latency_ms": 100}, timeout=5).raise_for_status()
    yield sim
    sim.stop()


def batch_config(sim_url: str, redis_url: str) -> dict[str, Any]:
    return {
        "server": {"log_format": "json"},
        "redis": {"url": redis_url, "private": "never"},
        "auth": {"clients": [{"name": "batch", "key": BATCH_KEY, "tiers": ["interactive", "background"],
                              "default_tier": "background"}]},
        "providers": {"up": {"kind": "openai", "base_url": sim_url + "/v1", "api_key": "sk-sim", "batch": True,
                             "batch_window_s": 600}},
        "models": {"m": {"targets": [{"provider": "up", "model": "sim-1"}],
                         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "batch_discount": 0.5}}},
        "tiers": {"interactive": {"priority": 0, "reserved_concurrency": 1},
                  "background": {"priority": 2, "async": True, "max_delay_s": 3600, "provider_batch": True}},
        "queue": {"namespace": namespace("costb"), "provider_batch_min_items": 1, "provider_batch_max_wait_s": 0,
                  "provider_batch_poll_s": 0.2, "mini_batch_wait_s": 0.05},
    }


def test_a_provider_batch_job_is_metered_at_the_batch_discount(simulator, make_gateway, redis_server):
    gw = make_gateway(batch_config(simulator.url, redis_server.url))
    prompt = "x" * 400  # 100 tokens to the simulator; it answers 40
    realtime = (100 * 1.0 + 40 * 2.0) / 1_000_000  # 1.8e-04 dollars
    labels = {"provider": "up", "model": "sim-1"}
    job = wait_for(gw, BATCH_KEY, submit_job(gw, BATCH_KEY, "m", content=prompt), timeout=20)
    assert (job["status"], job["via"]) == ("succeeded", "provider_batch")
    assert metric(gw, "gateway_tokens_total", **labels, direction="input", pricing="batch") == 100
    assert metric(gw, "gateway_tokens_total", **labels, direction="output", pricing="batch") == 40
    assert metric(gw, "gateway_cost_usd_total", **labels, pricing="batch") == pytest.approx(realtime * 0.5)
    assert metric(gw, "gateway_cost_baseline_usd_total", **labels, pricing="batch") == pytest.approx(realtime)
    assert metric(gw, "gateway_metered_requests_total", **labels, pricing="batch") == 1
    assert metric(gw, "gateway_jobs_total", tier="background", via="provider_batch", status="succeeded") == 1
    # The same request served synchronously pays the full price.
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                   json={"model": "m", "messages": [{"role": "user", "content": prompt}]},
                   headers={"Authorization": f"Bearer {BATCH_KEY}", "X-Gateway-Tier": "interactive"})
    assert r.status_code == 200, r.text
    assert metric(gw, "gateway_cost_usd_total", **labels, pricing="realtime") == pytest.approx(realtime)
    # Savings against an all-realtime baseline: what the batch saved.
    text = httpx.get(gw.url + "/metrics").text
    savings = (sum(sample(text, "gateway_cost_baseline_usd_total", **labels, pricing=p) for p in ("batch", "realtime"))
               - sum(sample(text, "gateway_cost_usd_total", **labels, pricing=p) for p in ("batch", "realtime")))
    assert savings == pytest.approx(realtime * 0.5)
    deadline = time.monotonic() + 5
    while metric(gw, "gateway_provider_batches_inflight", provider="up") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
