"""The poller: follows submitted provider batches to the end and lands their results on the jobs.

Batches are recorded in Redis, so polling resumes after any restart, on any
replica; a per-batch lease keeps two replicas from polling the same batch, and
polls back off (x1.5 up to 10 minutes). Results map back by ``custom_id`` (the
job id). Items that did not succeed for a retryable reason, and every item of
an expired, cancelled or failed batch, go back to the realtime path while their
deadline allows; the rest end ``failed`` or ``expired``. Every job ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from gateway.errors import AttemptFailed, GatewayError, is_retryable_status
from gateway.observability.tracing import OPERATIONS, PROVIDER_NAMES
from gateway.providers.base import BatchPoll, BatchResult, BatchState
from gateway.queue.job import Job, JobStatus, Via
from gateway.queue.store import Entry, Outcome, QueueStore

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.poller")

TICK_S = 1.0
MAX_POLL_INTERVAL_S = 600.0
LEASE_MS = 60_000


def next_interval_s(first_s: float, polls: int) -> float:
    return min(first_s * 1.5 ** polls, MAX_POLL_INTERVAL_S)


def settle(job: Job, result: BatchResult | None, batch_state: BatchState, now: float) -> Outcome | None:
    """What one job of an ended batch becomes; ``None`` means back to the realtime path."""
    if result is not None and result.status_code == 200 and result.body:
        return Outcome(JobStatus.SUCCEEDED, Via.PROVIDER_BATCH, 200, result.body)
    if result is not None and result.status_code is not None and not is_retryable_status(result.status_code):
        error = result.error or {"message": f"The provider answered {result.status_code}.", "type": "upstream_error"}
        return Outcome(JobStatus.FAILED, Via.PROVIDER_BATCH, result.status_code, result.body, error)
    if now < job.deadline:
        return None  # retryable item failure, or the batch ended without it: try realtime
    if result is None and batch_state in (BatchState.EXPIRED, BatchState.CANCELLED):
        error = {"message": "The provider batch ended before this item ran, and its deadline has passed.",
                 "type": "server_error", "code": "expired"}
        return Outcome(JobStatus.EXPIRED, Via.PROVIDER_BATCH, error=error)
    error = (result.error if result else None) or {"message": "The provider batch did not serve this item.",
                                                   "type": "upstream_error", "code": "provider_batch_failed"}
    return Outcome(JobStatus.FAILED, Via.PROVIDER_BATCH, result.status_code if result else None,
                   result.body if result else None, error)


class Poller:
    def __init__(self, gateway: Gateway, store: QueueStore) -> None:
        self.gw = gateway
        self.store = store
        self.stopping = False
        self.me = store.consumer

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.tick(time.time())
            except (GatewayError, RedisError, OSError):
                pass  # Redis away: the batches are recorded there and are polled once it is back
            except Exception:  # noqa: BLE001
                log.exception("poller tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> None:
        r = self.store.redis
        keys = self.store.keys
        members = [m.decode() for m in await r.smembers(keys.provider_batches)]
        inflight: dict[str, int] = {p: 0 for p in self.gw.config.providers}
        for batch_key in members:
            record = await r.hgetall(keys.provider_batch(batch_key))
            if not record:
                await r.srem(keys.provider_batches, batch_key)
                continue
            rec = {k.decode(): v.decode() for k, v in record.items()}
            inflight[rec["provider"]] = inflight.get(rec["provider"], 0) + 1
            if float(rec["next_poll_at"]) > now:
                continue
            if not await self.store.lease(f"pbatch:{batch_key}", self.me, LEASE_MS):
                continue
            if await self.poll(batch_key, rec, now):
                inflight[rec["provider"]] -= 1
        for provider, n in inflight.items():
            self.gw.metrics.provider_batches_inflight.labels(provider).set(n)

    async def poll(self, batch_key: str, rec: dict[str, Any], now: float) -> bool:
        """Poll one batch; land its results when it has ended. Returns whether it is finished."""
        r = self.store.redis
        keys = self.store.keys
        provider = self.gw.providers[rec["provider"]]
        polls = int(rec.get("polls", 0)) + 1
        try:
            state: BatchPoll = await provider.poll_batch(rec["upstream_id"])
        except AttemptFailed as exc:
            if exc.upstream_status in (404,):
                state = BatchPoll(BatchState.EXPIRED, error="the provider no longer knows this batch")
            else:
                delay = next_interval_s(self.gw.config.queue.provider_batch_poll_s, polls)
                await r.hset(keys.provider_batch(batch_key), mapping={"next_poll_at": now + delay, "polls": polls})
                return False
        if state.state is BatchState.IN_PROGRESS:
            delay = next_interval_s(self.gw.config.queue.provider_batch_poll_s, polls)
            await r.hset(keys.provider_batch(batch_key), mapping={"next_poll_at": now + delay, "polls": polls})
            return False
        await self.land(rec, state, now)
        await r.delete(keys.provider_batch(batch_key))
        await r.srem(keys.provider_batches, batch_key)
        log.info("provider batch ended", extra={"fields": {"batch": batch_key, "state": state.state.value,
                                                           "results": len(state.results)}})
        return True

    async def land(self, rec: dict[str, Any], state: BatchPoll, now: float) -> None:
        job_ids = orjson.loads(rec["jobs"])
        by_id = {res.custom_id: res for res in state.results}
        target = f"{rec['provider']}/{rec['model']}"
        for job in await self.store.jobs(job_ids):
            if job is None or job.status.terminal:
                continue
            result = by_id.get(job.id)
            outcome = settle(job, result, state.state, now)
            if outcome is None:
                await self.store.resubmit(job.id, job.tier)
                continue
            if outcome.status is JobStatus.SUCCEEDED:
                outcome = Outcome(outcome.status, outcome.via, outcome.response_status, outcome.response_body,
                                  target=target)
                self.gw.meter_target(job.model, rec["provider"], rec["model"], result.usage if result else None,
                                     batch=True)
            if self.gw.tracing.enabled:
                self._trace(job, rec, outcome, result)
            if await self.store.complete(job, Entry(job.tier, "0-0", job.id), outcome):
                await self.gw.job_finished(job, outcome)

    def _trace(self, job: Job, rec: dict[str, Any], outcome: Outcome, result: BatchResult | None) -> None:
        """A span per job served by a provider batch, linked to the request that enqueued it."""
        tracing = self.gw.tracing
        kind = self.gw.config.providers[rec["provider"]].kind
        span = tracing.job_span("gateway.job", job.traceparent, {
            "gateway.job.id": job.id, "gateway.tier": job.tier, "gateway.via": Via.PROVIDER_BATCH.value,
            "gateway.provider_batch": rec["upstream_id"], "gateway.job.status": outcome.status.value,
            "gen_ai.operation.name": OPERATIONS.get(job.route, job.route),
            "gen_ai.provider.name": PROVIDER_NAMES.get(kind, kind), "gen_ai.request.model": rec["model"],
        })
        if result is not None and result.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
        if outcome.status is not JobStatus.SUCCEEDED:
            tracing.fail(span, outcome.status.value)
        span.end()
