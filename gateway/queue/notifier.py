"""Completion notices: one pub/sub subscription per process, fanned out to local waiters.

Holding a connection (``hold_s``) and ``?wait=`` long-polls both wait here.
A notice can be missed while Redis reconnects, so waiters also re-read the job
every second: the subscription makes waiting fast, the re-read makes it sure.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.queue.job import Job
from gateway.queue.keys import Keys
from gateway.queue.store import QueueStore

log = logging.getLogger("gateway.queue")

RECHECK_S = 1.0


class Notifier:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.stopping = False

    async def run(self) -> None:
        """Listen until stopped, resubscribing after Redis errors."""
        backoff = 0.1
        while not self.stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys.done_channel)
                backoff = 0.1
                while not self.stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.notify(message["data"].decode())
            except (RedisError, OSError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    def notify(self, job_id: str) -> None:
        for fut in self._waiters.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, store: QueueStore, job_id: str, timeout: float) -> Job | None:
        """The job once it is terminal, or as it stands when ``timeout`` runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(job_id, set()).add(fut)
            try:
                try:
                    job = await store.get(job_id)
                except GatewayError:
                    job = None  # Redis is away for now; keep waiting until it answers or time runs out
                remaining = deadline - loop.time()
                if (job is not None and job.status.terminal) or remaining <= 0:
                    return job
                try:
                    await asyncio.wait_for(fut, min(remaining, RECHECK_S))
                except asyncio.TimeoutError:
                    pass
            finally:
                waiters = self._waiters.get(job_id)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[job_id]
