"""The optional global concurrency cap: a hard per-provider limit across replicas, kept in Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.errors import Saturated
from gateway.global_cap import GlobalCap
from tests.conftest import CLIENT_KEY, base_config
from tests.support.upstream import Behaviour


async def test_leases_cap_concurrency_and_expire_on_their_own(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    cap = GlobalCap(r, "{gw}:cap:test-expiry", 2)
    a = await cap.acquire(lease_s=10, wait_s=0)
    b = await cap.acquire(lease_s=0.2, wait_s=0)
    assert a and b
    with pytest.raises(Saturated):
        await cap.acquire(lease_s=10, wait_s=0)
    await cap.release(a)
    c = await cap.acquire(lease_s=10, wait_s=0)  # a's slot is free again
    assert c
    # b's lease (0.2 s, plus a second of grace) runs out without a release: its slot frees itself.
    d = await cap.acquire(lease_s=10, wait_s=3)
    assert d
    await r.aclose()


async def test_an_unreachable_redis_fails_open(redis_server):
    r = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cap = GlobalCap(r, "{gw}:cap:down", 1)
    assert await cap.acquire(lease_s=1, wait_s=0) is None  # go ahead: the sync path never depends on Redis
    await cap.release(None)
    await r.aclose()


def test_two_replicas_never_exceed_the_global_cap(make_gateway, upstream, redis_server):
    cfg = base_config(upstream, redis_server.url)
    cfg["providers"]["primary"]["global_max_concurrency"] = 2
    cfg["models"]["slow"] = {"targets": [{"provider": "primary", "model": "p-slow"}]}
    cfg["tiers"]["interactive"].update({"admission_timeout_s": 8, "timeout_s": 15, "first_byte_timeout_s": 5})
    cfg["queue"] = {"namespace": "globalcap"}
    upstream.default("p-slow", Behaviour(delay_s=0.6))
    replicas = [make_gateway(cfg, args=("--no-worker",)) for _ in range(2)]

    def call(i: int) -> int:
        gw = replicas[i % 2]
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                       json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(call, range(6)))
    assert statuses == [200] * 6  # everyone waited their turn within the admission timeout
    assert upstream.peak["p-slow"] == 2  # but never more than two at once, across both replicas
