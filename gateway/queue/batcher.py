"""The batcher: packs queued jobs into provider batch APIs, at about half the price.

A drained job of a ``provider_batch`` tier, whose first target's provider has
``batch: true`` and whose deadline allows the provider's window, is not run:
it moves to a staging set for its (provider, model, route) group. A group is
submitted as one upstream batch once it holds ``provider_batch_min_items`` jobs
or its oldest job has waited ``provider_batch_max_wait_s``. Everything else goes
the mini-batch way. One replica at a time submits (a lease); the submitted batch
is recorded in Redis, so the poller picks it up on any replica, after restarts too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from gateway.config import ProviderConfig, QueueConfig, TierConfig
from gateway.errors import AttemptFailed, GatewayError
from gateway.providers.base import BatchItem
from gateway.queue.drainer import STRIP_FOR_DRAIN
from gateway.queue.job import Job, JobStatus, Via
from gateway.queue.store import Entry, QueueStore

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.batcher")

BATCH_ROUTES = {"openai": ("chat/completions", "completions", "embeddings"), "anthropic": ("chat/completions",),
                "simulator": ("chat/completions", "completions", "embeddings")}
MAX_ITEMS = {"openai": 50_000, "anthropic": 100_000, "simulator": 50_000}
TICK_S = 1.0


def fits_window(job: Job, window_s: float, now: float) -> bool:
    """The job accepts a delay as long as the provider's window, and at least half of it is still left."""
    return job.deadline - job.created_at >= window_s and job.deadline - now >= window_s / 2


def wants_provider_batch(job: Job, tier: TierConfig, provider: ProviderConfig, now: float) -> bool:
    """Whether a drained job goes to a provider batch rather than a realtime mini-batch."""
    return (
        tier.provider_batch
        and provider.batch
        and not job.realtime_only
        and not job.stream
        and job.route in BATCH_ROUTES.get(provider.kind, ())
        and fits_window(job, provider.batch_window_s, now)
    )


def due(count: int, oldest_age_s: float, q: QueueConfig) -> bool:
    """Whether a staged group is worth submitting now."""
    return count > 0 and (count >= q.provider_batch_min_items or oldest_age_s >= q.provider_batch_max_wait_s)


@dataclass(frozen=True, slots=True)
class Group:
    provider: str
    model: str  # the target's model
    route: str

    @property
    def name(self) -> str:
        return f"{self.provider}|{self.model}|{self.route}"

    @classmethod
    def parse(cls, name: str) -> Group:
        provider, model, route = name.split("|", 2)
        return cls(provider, model, route)


class Batcher:
    def __init__(self, gateway: Gateway, store: QueueStore) -> None:
        self.gw = gateway
        self.store = store
        self.stopping = False
        self.me = store.consumer

    def group_for(self, job: Job) -> Group | None:
        """The staging group of a drained job, or None when it should run as a mini-batch."""
        cfg = self.gw.config
        target = cfg.models[job.model].targets[0]
        provider = cfg.providers[target.provider]
        if not wants_provider_batch(job, cfg.tiers[job.tier], provider, time.time()):
            return None
        return Group(target.provider, target.model, job.route)

    async def stage(self, job: Job, entry: Entry, group: Group) -> None:
        await self.store.stage(job, entry, group.name)

    async def run(self) -> None:
        while not self.stopping:
            try:
                if await self.store.lease("batcher", self.me, int(TICK_S * 5000)):
                    await self.tick(time.time())
            except (GatewayError, RedisError, OSError):
                pass  # Redis away: staged jobs wait in Redis, nothing is lost
            except Exception:  # noqa: BLE001 - keep batching after one bad group
                log.exception("batcher tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> None:
        r = self.store.redis
        for raw in await r.smembers(self.store.keys.staging_groups):
            group = Group.parse(raw.decode())
            key = self.store.keys.staging(group.name)
            count = await r.zcard(key)
            if count == 0:
                await r.srem(self.store.keys.staging_groups, group.name)
                continue
            oldest = await r.zrange(key, 0, 0, withscores=True)
            age = now - oldest[0][1] if oldest else 0.0
            if due(count, age, self.gw.config.queue):
                await self.submit(group)

    async def submit(self, group: Group) -> None:
        r = self.store.redis
        key = self.store.keys.staging(group.name)
        provider_cfg = self.gw.config.providers[group.provider]
        limit = MAX_ITEMS.get(provider_cfg.kind, 50_000)
        ids = [i.decode() for i in await r.zrange(key, 0, limit - 1)]
        jobs = await self.store.jobs(ids)
        live = [j for j in jobs if j is not None and j.status is JobStatus.QUEUED]
        gone = [i for i, j in zip(ids, jobs) if j is None or j.status is not JobStatus.QUEUED]
        if gone:
            await r.zrem(key, *gone)  # cancelled or expired while staged
        if not live:
            return
        items = []
        for job in live:
            body = orjson.loads(job.body)
            for k in STRIP_FOR_DRAIN:
                body.pop(k, None)
            body["model"] = group.model
            items.append(BatchItem(job.id, job.route, body))
        provider = self.gw.providers[group.provider]
        try:
            upstream_id = await provider.submit_batch(group.model, items)
        except (AttemptFailed, ValueError) as exc:
            if isinstance(exc, AttemptFailed) and exc.retryable:
                log.warning("provider batch submission failed; will retry", extra={"fields": {"group": group.name}})
                return
            # The provider refused the batch itself: these jobs go the realtime way instead.
            log.warning("provider refused a batch; sending its jobs to mini-batches",
                        extra={"fields": {"group": group.name, "error": str(exc)}})
            for job in live:
                await self.store.resubmit(job.id, job.tier)
            await r.zrem(key, *[j.id for j in live])
            return
        batch_key = f"{group.provider}:{upstream_id}"
        now = time.time()
        record = {
            "provider": group.provider, "model": group.model, "route": group.route, "upstream_id": upstream_id,
            "jobs": orjson.dumps([j.id for j in live]), "submitted_at": now,
            "next_poll_at": now + self.gw.config.queue.provider_batch_poll_s, "polls": 0,
        }
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(self.store.keys.provider_batch(batch_key), mapping=record)
            pipe.sadd(self.store.keys.provider_batches, batch_key)
            pipe.zrem(key, *[j.id for j in live])
            for job in live:
                pipe.hset(self.store.keys.job(job.id), mapping={"status": JobStatus.RUNNING.value,
                                                                "via": Via.PROVIDER_BATCH.value})
                pipe.hincrby(self.store.keys.job(job.id), "attempts", 1)
            await pipe.execute()
        log.info("submitted a provider batch", extra={"fields": {"group": group.name, "items": len(live),
                                                                 "batch": batch_key}})
