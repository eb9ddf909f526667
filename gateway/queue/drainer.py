"""The drainer: takes deferred jobs off the streams in mini-batches and serves them.

Jobs go through the same router as sync traffic (fallback, circuits, admission),
so a drain only gets the concurrency that sync tiers leave free, and within the
provider's envelope. Delivery is at least once: an entry is acked only when its
job is terminal, a crashed worker's entries are reclaimed after the visibility
timeout, and completion is idempotent, so a job ends exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.body import estimate_tokens
from gateway.errors import CircuitOpen, GatewayError, QueueUnavailable, RateLimited, Saturated, UpstreamRejected
from gateway.queue.job import Job, JobStatus, Via
from gateway.queue.store import Entry, Outcome, QueueStore

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.queue.batcher import Batcher

log = logging.getLogger("gateway.drainer")

STRIP_FOR_DRAIN = ("stream", "stream_options")


def retry_delay_s(attempts: int) -> float:
    return min(0.5 * 2 ** max(attempts - 1, 0), 30.0)


class Drainer:
    def __init__(self, gateway: Gateway, store: QueueStore, batcher: Batcher | None = None) -> None:
        self.gw = gateway
        self.store = store
        self.batcher = batcher
        self.q = gateway.config.queue
        self.active: dict[str, Entry] = {}
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()

    async def run(self) -> None:
        """Fetch and dispatch until stopped; Redis outages back off instead of crashing."""
        backoff = 0.1
        while not self.stopping:
            free = self.q.mini_batch_size - len(self.active)
            # Refill in mini-batches, not one entry per freed slot: a read per job was the drain's bottleneck.
            if free <= 0 or (self.active and free < max(self.q.mini_batch_size // 2, 1)):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                entries = await self.store.fetch(free, int(self.q.mini_batch_wait_s * 1000) or 1)
                backoff = 0.1
            except QueueUnavailable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for entry in entries:
                self._dispatch(entry)
        await self.drain_in_flight(timeout=10.0)

    async def reclaim_loop(self) -> None:
        """Take over entries whose worker went silent, and keep our own from looking silent."""
        vis_ms = int(self.q.visibility_timeout_s * 1000)
        while not self.stopping:
            await asyncio.sleep(self.q.visibility_timeout_s / 3)
            try:
                if self.active:
                    await self.store.heartbeat(list(self.active.values()))
                for tier in self.store.tiers:
                    free = self.q.mini_batch_size - len(self.active)
                    if free <= 0:
                        break
                    for entry in await self.store.reclaim(tier, vis_ms, free):
                        if entry.entry_id not in self.active:
                            log.info("reclaimed a job from a silent worker", extra={"fields": {"tier": tier}})
                            self._dispatch(entry)
            except QueueUnavailable:
                continue

    async def drain_in_flight(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _dispatch(self, entry: Entry) -> None:
        self.active[entry.entry_id] = entry
        task = asyncio.get_running_loop().create_task(self._process(entry), name=f"job-{entry.job_id[:12]}")
        self._tasks.add(task)
        task.add_done_callback(lambda t, e=entry: self._done(t, e))

    def _done(self, task: asyncio.Task[None], entry: Entry) -> None:
        self._tasks.discard(task)
        self.active.pop(entry.entry_id, None)
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job processing failed", exc_info=task.exception())

    async def _process(self, entry: Entry) -> None:
        try:
            job = await self.store.claim(entry)
        except QueueUnavailable:
            return  # still pending in Redis; reclaimed once Redis and the visibility timeout allow
        if job is None:
            return
        if job.attempts > self.q.max_attempts:
            error = job.error or {"message": "The job failed too many times.", "type": "server_error", "code": "max_attempts"}
            await self._finish(job, entry, Outcome(JobStatus.FAILED, error=error, dead=True))
            return
        if time.time() > job.deadline:
            error = {"message": "The job passed its deadline before it could run.", "type": "server_error", "code": "expired"}
            await self._finish(job, entry, Outcome(JobStatus.EXPIRED, error=error))
            return
        group = self.batcher.group_for(job) if self.batcher is not None else None
        if group is not None:
            try:
                await self.batcher.stage(job, entry, group)  # type: ignore[union-attr]
            except QueueUnavailable:
                pass  # still pending: reclaimed and staged again later
            return
        outcome = await self._traced_serve(job)
        if outcome is None:  # retryable: back to the queue, unless attempts are used up
            if job.attempts >= self.q.max_attempts:
                error = {"message": f"The job failed {job.attempts} times.", "type": "upstream_error", "code": "max_attempts"}
                if job.error:
                    error["last_error"] = job.error  # what went wrong on the final attempt, for whoever reads the job
                await self._finish(job, entry, Outcome(JobStatus.FAILED, error=error, dead=True))
                return
            await asyncio.sleep(min(retry_delay_s(job.attempts), max(job.deadline - time.time(), 0)))
            try:
                await self.store.requeue(job, entry)
            except QueueUnavailable:
                pass
            return
        await self._finish(job, entry, outcome)

    async def _traced_serve(self, job: Job) -> Outcome | None:
        """``_serve`` inside a worker span linked to the request that enqueued the job."""
        tracing = self.gw.tracing
        if not tracing.enabled:
            return await self._serve(job)
        span = tracing.job_span("gateway.job", job.traceparent, {
            "gateway.job.id": job.id, "gateway.tier": job.tier, "gateway.job.attempt": job.attempts,
            "gateway.via": Via.MINIBATCH.value, "gen_ai.request.model": job.model,
        })
        token = tracing.activate(span)
        try:
            outcome = await self._serve(job)
            span.set_attribute("gateway.job.status", outcome.status.value if outcome else "requeued")
            return outcome
        finally:
            tracing.deactivate(token)
            span.end()

    async def _serve(self, job: Job) -> Outcome | None:
        """Run the job through the router; ``None`` means try again later."""
        gw = self.gw
        tier = gw.config.tiers[job.tier]
        body = orjson.loads(job.body)
        for key in STRIP_FOR_DRAIN:
            body.pop(key, None)
        router = gw.router
        assert router is not None

        async def pace(provider: str) -> float:
            # Holding the slot: the call leaves only when the provider's envelope allows it.
            waited = 0.0
            while (wait := await self._envelope_wait(provider, body)) > 0:
                if time.time() + wait > job.deadline:
                    raise RateLimited("The provider's envelope has no room before this job's deadline.")
                await asyncio.sleep(wait)
                waited += wait
            return waited

        while True:
            try:
                served = await router.serve(job.model, job.route, body, job.tier, tier, time.monotonic(), stream=False,
                                            request_id=job.id, pace=pace)
            except RateLimited:
                return None
            except Saturated:
                if time.time() > job.deadline:
                    return None
                await asyncio.sleep(0.05)  # sync traffic holds the slots: wait for what it leaves free
                continue
            except CircuitOpen as exc:
                await asyncio.sleep(min(float(exc.headers.get("Retry-After", "1")), 5.0))
                return None
            except UpstreamRejected as exc:
                body = self.gw.redactor.bytes(exc.render())
                return Outcome(JobStatus.FAILED, Via.MINIBATCH, exc.status, body, orjson.loads(body).get("error"))
            except GatewayError as exc:
                job.error = exc.body()["error"]
                await self.store.set_fields(job.id, error=orjson.dumps(job.error))
                return None
            served.release()
            reply = served.reply
            assert reply is not None
            gw.meter(job.model, served.target, reply.usage, batch=False)
            return Outcome(JobStatus.SUCCEEDED, Via.MINIBATCH, 200, reply.body, target=served.target.label)

    async def _envelope_wait(self, provider: str, body: dict[str, Any]) -> float:
        try:
            return await self.gw.envelope.take(provider, estimate_tokens(body), self.gw.drain_scale(provider))
        except QueueUnavailable:
            return 1.0

    async def _finish(self, job: Job, entry: Entry, outcome: Outcome) -> None:
        try:
            first = await self.store.complete(job, entry, outcome)
        except QueueUnavailable:
            return  # the entry stays pending and is reclaimed; completion is idempotent
        if first:
            await self.gw.job_finished(job, outcome)
