"""The drain envelope's token buckets, against a real Redis (whose clock the Lua script uses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.errors import QueueUnavailable
from gateway.queue.envelope import Envelope
from gateway.queue.keys import Keys
from tests.support.jobs import namespace
from tests.support.net import free_port


@pytest.fixture
async def redis(redis_server) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def envelope(redis: aioredis.Redis, keys: Keys, rpm: int | None = None, tpm: int | None = None) -> Envelope:
    return Envelope(redis, keys, {"p": (rpm, tpm)})


async def takes(env: Envelope, n: int, tokens: int = 1, scale: float = 1.0) -> list[float]:
    return [await env.take("p", tokens, scale) for _ in range(n)]


async def until_refused(env: Envelope, scale: float = 1.0) -> tuple[int, float]:
    """Take until the bucket says wait: (how many more it gave, the wait it named)."""
    given = 0
    while (wait := await env.take("p", 1, scale)) == 0:
        given += 1
        assert given < 1000
    return given, wait


@pytest.mark.parametrize(
    ("rpm", "scale", "burst", "step_s"),
    [
        (600, 1.0, 10, 0.1),  # 10/s: one second of burst, then one every 100 ms
        (600, 0.5, 5, 0.2),  # a degraded provider drains at half the rate
        (60, 1.0, 1, 1.0),
        (30, 1.0, 1, 2.0),  # under one per second: a burst of one
    ],
)
async def test_rpm_bucket_allows_one_second_of_burst_then_paces(redis, rpm, scale, burst, step_s):
    env = envelope(redis, Keys(namespace("env")), rpm=rpm)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await takes(env, burst, scale=scale) == [0.0] * burst
    more, wait = await until_refused(env, scale)
    # Beyond the burst, only what refilled while we were taking (timing jitter on a busy machine).
    assert more <= (loop.time() - started) / step_s + 1
    assert 0 < wait <= step_s * 1.05


async def test_waiting_what_the_bucket_says_is_enough(redis):
    env = envelope(redis, Keys(namespace("env")), rpm=1200)  # 20/s
    _, wait = await until_refused(env)
    await asyncio.sleep(wait + 0.01)
    assert await env.take("p", 1) == 0.0


async def test_the_bucket_is_shared_by_every_replica(redis, redis_server):
    keys = Keys(namespace("env"))
    other = aioredis.Redis.from_url(redis_server.url)
    try:
        a, b = envelope(redis, keys, rpm=60), envelope(other, keys, rpm=60)  # one a second, burst one
        assert await a.take("p", 1) == 0.0
        assert await b.take("p", 1) > 0  # the other replica already took it
        assert await a.take("p", 1) > 0
    finally:
        await other.aclose()


async def test_providers_and_namespaces_have_their_own_buckets(redis):
    keys = Keys(namespace("env"))
    env = Envelope(redis, keys, {"p": (60, None), "q": (60, None)})
    assert await env.take("p", 1) == 0.0
    assert await env.take("q", 1) == 0.0
    assert await env.take("p", 1) > 0
    assert await envelope(redis, Keys(namespace("env")), rpm=60).take("p", 1) == 0.0


async def test_tpm_bucket_charges_the_estimated_tokens(redis):
    env = envelope(redis, Keys(namespace("env")), tpm=600)  # 10 tokens/s, burst 10
    assert await env.take("p", 6) == 0.0
    wait = await env.take("p", 6)  # 4 left (and a little refill): about 2 more needed at 10/s
    assert 0 < wait <= 0.21


async def test_a_request_larger_than_the_burst_still_goes_through(redis):
    env = envelope(redis, Keys(namespace("env")), tpm=600)  # 10 tokens/s: burst 10
    assert await env.take("p", 10_000) == 0.0  # charged the whole burst, not refused forever
    assert await env.take("p", 1) > 0


async def test_the_bucket_key_expires(redis):
    keys = Keys(namespace("env"))
    env = envelope(redis, keys, rpm=600)
    await env.take("p", 1)
    ttl_ms = await redis.pttl(keys.bucket("p", "rpm"))
    assert 0 < ttl_ms <= 2000


async def test_unlimited_providers_never_wait_and_never_ask_redis():
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    env = Envelope(dead, Keys(namespace("env")), {"p": (None, None)})
    assert await takes(env, 100) == [0.0] * 100
    assert await env.take("unknown-provider", 1) == 0.0
    await dead.aclose()


async def test_redis_unreachable_is_queue_unavailable():
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    env = Envelope(dead, Keys(namespace("env")), {"p": (600, 6000)})
    with pytest.raises(QueueUnavailable):
        await env.take("p", 10)
    await dead.aclose()
