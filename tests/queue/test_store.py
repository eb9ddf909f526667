"""The Redis store of jobs against a real Redis: streams, claims, idempotent completion, cancel, reclaim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.errors import QueueUnavailable
from gateway.queue.job import Job, JobStatus, Via, new_job_id
from gateway.queue.keys import Keys
from gateway.queue.store import Entry, Outcome, QueueStore
from tests.support.jobs import namespace
from tests.support.net import free_port

TIERS = ["interactive", "standard", "background"]
RESULT_TTL = 3600


@pytest.fixture
async def redis(redis_server) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace("store"))


def store(redis: aioredis.Redis, keys: Keys, consumer: str = "c1") -> QueueStore:
    return QueueStore(redis, keys, TIERS, RESULT_TTL, consumer)


def job(tier: str = "standard", **overrides: Any) -> Job:
    now = time.time()
    fields: dict[str, Any] = {"id": new_job_id(), "client": "web", "tier": tier, "model": "chat",
                              "route": "chat/completions", "body": b'{"model":"chat"}', "created_at": now,
                              "deadline": now + 600}
    fields.update(overrides)
    return Job(**fields)


SUCCESS = Outcome(JobStatus.SUCCEEDED, Via.MINIBATCH, 200, b'{"object":"chat.completion"}', target="primary/p-chat")


async def test_enqueue_writes_the_job_and_one_stream_entry(redis, keys):
    s = store(redis, keys)
    j = job()
    entry = await s.enqueue(j, ttl_s=700)
    assert await s.get(j.id) == j
    stream = await redis.xrange(keys.stream("standard"))
    assert [(eid.decode(), fields) for eid, fields in stream] == [(entry, {b"j": j.id.encode()})]
    assert 690 <= await redis.ttl(keys.job(j.id)) <= 700
    assert await redis.hget(keys.job(j.id), "entry") == entry.encode()
    assert await s.get("job_missing") is None


async def test_keys_share_one_hash_tag(keys):
    tag = "{" + keys.namespace + "}"
    for key in (keys.stream("standard"), keys.job("job_x"), keys.dead, keys.done_channel, keys.bucket("p", "rpm")):
        assert key.startswith(tag + ":")


async def test_fetch_takes_the_most_urgent_tier_first_and_fifo_within_a_tier(redis, keys):
    s = store(redis, keys)
    order = [job("background"), job("standard"), job("background"), job("interactive"), job("standard")]
    for j in order:
        await s.enqueue(j, 700)
    entries = await s.fetch(count=10, block_ms=0)
    expected = [j.id for t in TIERS for j in order if j.tier == t]
    assert [e.job_id for e in entries] == expected
    assert [e.tier for e in entries] == ["interactive", "standard", "standard", "background", "background"]
    # Delivered once: a second fetch (same or another consumer) gets nothing new.
    assert await s.fetch(count=10, block_ms=0) == []
    assert await store(redis, keys, "c2").fetch(count=10, block_ms=0) == []


async def test_fetch_respects_count_and_blocks_when_empty(redis, keys):
    s = store(redis, keys)
    for _ in range(5):
        await s.enqueue(job("background"), 700)
    assert len(await s.fetch(count=3, block_ms=0)) == 3
    assert len(await s.fetch(count=3, block_ms=0)) == 2
    started = time.monotonic()
    assert await s.fetch(count=3, block_ms=200) == []
    assert time.monotonic() - started >= 0.15


async def test_fetch_wakes_for_an_entry_that_arrives_while_blocked(redis, keys):
    s = store(redis, keys)
    await s.ensure_groups()
    j = job("background")

    async def later() -> None:
        await asyncio.sleep(0.1)
        await store(redis, keys, "producer").enqueue(j, 700)

    task = asyncio.create_task(later())
    entries = await s.fetch(count=4, block_ms=5000)
    await task
    assert [e.job_id for e in entries] == [j.id]


async def test_claim_then_complete_once(redis, keys):
    s = store(redis, keys)
    j = job()
    await s.enqueue(j, 700)
    [entry] = await s.fetch(1, 0)
    claimed = await s.claim(entry)
    assert claimed is not None
    assert (claimed.status, claimed.attempts) == (JobStatus.RUNNING, 1)

    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.done_channel)
    assert await s.complete(claimed, entry, SUCCESS) is True
    assert await s.complete(claimed, entry, Outcome(JobStatus.FAILED, error={"message": "late"})) is False
    notices = []
    for _ in range(3):
        message = await pubsub.get_message(timeout=0.3)
        if message:
            notices.append(message["data"].decode())
    await pubsub.aclose()
    assert notices == [j.id]  # announced once

    done = await s.get(j.id)
    assert done is not None
    assert (done.status, done.via, done.response_status, done.target) == (JobStatus.SUCCEEDED, Via.MINIBATCH, 200, "primary/p-chat")
    assert done.response_body == SUCCESS.response_body
    assert done.error is None and done.completed_at is not None
    assert RESULT_TTL - 10 <= await redis.ttl(keys.job(j.id)) <= RESULT_TTL
    # The entry is acked and gone: nothing pending, nothing to redeliver.
    assert await redis.xlen(keys.stream("standard")) == 0
    assert (await redis.xpending(keys.stream("standard"), keys.group))["pending"] == 0


async def test_claim_of_a_job_already_over_acks_its_entry(redis, keys):
    s = store(redis, keys)
    j = job()
    await s.enqueue(j, 700)
    [first] = await s.fetch(1, 0)
    claimed = await s.claim(first)
    assert claimed is not None
    await s.complete(claimed, first, SUCCESS)
    # A duplicate entry (at-least-once delivery) for the same job:
    await redis.xadd(keys.stream("standard"), {"j": j.id})
    [duplicate] = await s.fetch(1, 0)
    assert await s.claim(duplicate) is None
    assert (await redis.xpending(keys.stream("standard"), keys.group))["pending"] == 0
    assert (await s.get(j.id)).attempts == 1  # type: ignore[union-attr]


async def test_cancel_only_before_dispatch(redis, keys):
    s = store(redis, keys)
    queued, running = job(), job()
    await s.enqueue(queued, 700)
    await s.enqueue(running, 700)
    [e1, e2] = await s.fetch(2, 0)
    claimed = await s.claim(e2)
    assert claimed is not None and claimed.id == running.id

    assert await s.cancel(queued.id, "standard") == "cancelled"
    assert await s.cancel(running.id, "standard") == "running"
    cancelled = await s.get(queued.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED and cancelled.completed_at
    assert RESULT_TTL - 10 <= await redis.ttl(keys.job(queued.id)) <= RESULT_TTL
    # A drainer that had already fetched the cancelled job's entry does not run it.
    assert await s.claim(e1) is None

    await s.complete(claimed, e2, SUCCESS)
    assert await s.cancel(running.id, "standard") == "succeeded"
    assert await s.cancel("job_missing", "standard") is None


async def test_cancelled_job_is_never_delivered(redis, keys):
    s = store(redis, keys)
    j = job()
    await s.enqueue(j, 700)
    assert await s.cancel(j.id, "standard") == "cancelled"
    assert await s.fetch(5, 0) == []


async def test_requeue_puts_a_running_job_back_at_the_tail(redis, keys):
    s = store(redis, keys)
    a, b = job(), job()
    await s.enqueue(a, 700)
    [ea] = await s.fetch(1, 0)
    claimed = await s.claim(ea)
    assert claimed is not None
    await s.enqueue(b, 700)
    await s.requeue(claimed, ea)
    back = await s.get(a.id)
    assert back is not None and (back.status, back.attempts) == (JobStatus.QUEUED, 1)
    assert [e.job_id for e in await s.fetch(5, 0)] == [b.id, a.id]
    assert (await redis.xpending(keys.stream("standard"), keys.group))["pending"] == 2  # just the two new deliveries


async def test_reclaim_after_the_visibility_timeout_and_heartbeat_prevents_it(redis, keys):
    crashed, alive, rescuer = store(redis, keys, "crashed"), store(redis, keys, "alive"), store(redis, keys, "rescuer")
    j1, j2 = job("background"), job("background")
    await crashed.enqueue(j1, 700)
    [lost] = await crashed.fetch(1, 0)
    assert await crashed.claim(lost) is not None
    await alive.enqueue(j2, 700)
    [kept] = await alive.fetch(1, 0)
    assert await alive.claim(kept) is not None

    assert await rescuer.reclaim("background", min_idle_ms=300, count=10) == []  # not idle long enough yet
    await asyncio.sleep(0.35)
    await alive.heartbeat([kept])
    reclaimed = await rescuer.reclaim("background", min_idle_ms=300, count=10)
    assert reclaimed == [Entry("background", lost.entry_id, j1.id)]
    again = await rescuer.claim(reclaimed[0])
    assert again is not None and again.attempts == 2  # the crashed attempt counts
    assert await rescuer.complete(again, reclaimed[0], SUCCESS) is True
    # The crashed worker's late completion (had it survived) changes nothing.
    assert await crashed.complete(again, lost, Outcome(JobStatus.FAILED, error={"message": "x"})) is False
    assert (await rescuer.get(j1.id)).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


async def test_dead_letter(redis, keys):
    s = store(redis, keys)
    j = job()
    await s.enqueue(j, 700)
    [entry] = await s.fetch(1, 0)
    claimed = await s.claim(entry)
    assert claimed is not None
    error = {"message": "boom", "type": "upstream_error", "code": "max_attempts"}
    assert await s.complete(claimed, entry, Outcome(JobStatus.FAILED, Via.MINIBATCH, error=error, dead=True))
    assert await s.dead_letters() == 1
    [(_, fields)] = await redis.xrange(keys.dead)
    assert fields == {b"j": j.id.encode()}
    failed = await s.get(j.id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error == error


async def test_depth_counts_waiting_and_running_and_ages_the_oldest(redis, keys):
    s = store(redis, keys)
    assert await s.depth("standard") == (0, 0.0)
    for _ in range(3):
        await s.enqueue(job(), 700)
    await asyncio.sleep(0.2)
    await s.fetch(1, 0)
    depth, age = await s.depth("standard")
    assert depth == 3
    assert 0.15 <= age < 30


async def test_redis_unreachable_is_queue_unavailable():
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    s = store(dead, Keys(namespace("dead")))
    j = job()
    for call in (lambda: s.enqueue(j, 700), lambda: s.get(j.id), lambda: s.fetch(1, 0), lambda: s.cancel(j.id, "standard"),
                 lambda: s.reclaim("standard", 1000, 1), lambda: s.dead_letters()):
        with pytest.raises(QueueUnavailable) as caught:
            await call()
        assert caught.value.status == 503 and caught.value.code == "queue_unavailable"
    await dead.aclose()
