"""Per-client limits (requests and tokens per minute, requests in flight), shared by replicas through Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.quota import Buckets
from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.upstream import Behaviour


async def test_a_bucket_grants_its_burst_then_says_how_long_to_wait(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    b = Buckets(r)
    key = "{gw}:test:bucket"
    assert [await b.take(key, rate_per_s=1.0, burst=3, cost=1) for _ in range(3)] == [0, 0, 0]
    wait = await b.take(key, rate_per_s=1.0, burst=3, cost=1)
    assert 0 < wait <= 1.0
    await r.aclose()


def limited_config(upstream, redis_url: str, limits: dict) -> dict:
    cfg = base_config(upstream, redis_url)
    cfg["auth"]["clients"][0]["limits"] = limits
    cfg["queue"] = {"namespace": "quota-" + "-".join(f"{k}{v}" for k, v in limits.items())}
    return cfg


def post(gw, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


def test_requests_per_minute_are_shared_by_replicas(make_gateway, upstream, redis_server):
    cfg = limited_config(upstream, redis_server.url, {"rpm": 6})  # one every ten seconds, a burst of one
    a = make_gateway(cfg, args=("--no-worker",))
    b = make_gateway(cfg, args=("--no-worker",))
    assert post(a).status_code == 200
    refused = post(b)  # the other replica draws from the same bucket
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert post(a).status_code == 429
    assert post(a, BATCH_KEY).status_code in (200, 202)  # another client is not limited by this one


def test_tokens_per_minute_count_the_prompt_and_the_output_cap(make_gateway, upstream, redis_server):
    gw = make_gateway(limited_config(upstream, redis_server.url, {"tpm": 600}), args=("--no-worker",))  # 10 a second
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "chat", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200  # the first draws the whole one-second burst ...
    again = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                       json={"model": "chat", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 429  # ... so the next must wait


def test_requests_in_flight_are_capped(make_gateway, upstream, redis_server):
    upstream.default("p-chat", Behaviour(delay_s=1.0))
    gw = make_gateway(limited_config(upstream, redis_server.url, {"max_inflight": 1}), args=("--no-worker",))
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: post(gw), range(3)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 429, 429]
    refused = [r for r in responses if r.status_code == 429][0]
    assert refused.json()["error"]["code"] == "too_many_inflight"
    assert post(gw).status_code == 200  # the slot came back when the first answer finished


@pytest.mark.parametrize("limits", [{"rpm": 0}, {"max_inflight": -1}, {"tpm": "many"}])
def test_bad_limits_are_config_errors(limits, upstream, redis_server):
    from gateway import config
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"auth\.clients\.0\.limits"):
        config.parse(limited_config(upstream, redis_server.url, limits), {})
