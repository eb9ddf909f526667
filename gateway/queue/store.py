"""The Redis store of jobs: streams per tier with one consumer group, job hashes, Lua for atomicity.

Each multi-key change (enqueue, claim, complete, cancel, requeue) is one Lua
script, so a crash between two commands cannot leave a job half-moved. Redis
errors are converted to ``QueueUnavailable`` here, where they enter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from gateway.errors import QueueUnavailable
from gateway.queue.job import Job, JobStatus, Via
from gateway.queue.keys import Keys

T = TypeVar("T")

# KEYS: job, stream. ARGV: ttl_s, then field/value pairs.
_ENQUEUE = """
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local entry = redis.call('XADD', KEYS[2], '*', 'j', redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'entry', entry)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return entry
"""

# KEYS: job, stream. ARGV: group, entry. Marks running and counts the attempt;
# returns the job hash, or nothing (after acking the entry) when the job is already over.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' or status == 'expired' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return false
end
redis.call('HSET', KEYS[1], 'status', 'running', 'entry', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: job, stream, dead. ARGV: group, entry, result_ttl_s, channel, job_id, dead (0/1), then fields.
# Idempotent: a job already terminal is left as it is (its entry is still acked).
_COMPLETE = """
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' or status == 'expired' then
  return 0
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'j', ARGV[5])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS: job, stream. ARGV: group, entry. Back to the tail of the queue, e.g. after every target failed.
_REQUEUE = """
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return false end
local entry = redis.call('XADD', KEYS[2], '*', 'j', redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'status', 'queued', 'entry', entry)
return entry
"""

# KEYS: job, stream. ARGV: now, result_ttl_s, channel, job_id. Only a queued job can be cancelled.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return status end
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry then redis.call('XDEL', KEYS[2], entry) end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 'cancelled'
"""

# KEYS: job, stream, staging, groups. ARGV: group, entry, score, staging group name.
# Moves a claimed job from its stream to a provider-batch staging set; it is queued again, not running.
_STAGE = """
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('ZADD', KEYS[3], ARGV[3], redis.call('HGET', KEYS[1], 'id'))
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""

# KEYS: job, stream. Back to the realtime path (never a provider batch again) unless already over.
_RESUBMIT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' or status == 'expired' then
  return false
end
local entry = redis.call('XADD', KEYS[2], '*', 'j', redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'status', 'queued', 'realtime_only', '1', 'entry', entry)
return entry
"""

# Take a lease if free or ours: KEYS lease; ARGV me, ttl_ms.
LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Entry:
    tier: str
    entry_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: JobStatus
    via: Via | None = None
    response_status: int | None = None
    response_body: bytes | None = None
    error: dict[str, Any] | None = None
    dead: bool = False
    target: str | None = None  # provider/model that served it


class QueueStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, tiers: Sequence[str], result_ttl_s: int, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.tiers = list(tiers)  # most urgent first
        self.result_ttl_s = result_ttl_s
        self.consumer = consumer
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)
        self._requeue = redis.register_script(_REQUEUE)
        self._cancel = redis.register_script(_CANCEL)
        self._stage = redis.register_script(_STAGE)
        self._resubmit = redis.register_script(_RESUBMIT)
        self._lease = redis.register_script(LEASE)
        self._groups_ready = False

    async def _io(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (RedisError, OSError) as exc:
            self._groups_ready = False
            raise QueueUnavailable(f"The job queue is unavailable ({type(exc).__name__}).") from None

    async def ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for tier in self.tiers:
            try:
                await self.redis.xgroup_create(self.keys.stream(tier), self.keys.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def enqueue(self, job: Job, ttl_s: int) -> str:
        args: list[Any] = [ttl_s]
        for k, v in job.to_hash().items():
            args += [k, v]

        async def op() -> str:
            entry = await self._enqueue(keys=[self.keys.job(job.id), self.keys.stream(job.tier)], args=args)
            return entry.decode()

        return await self._io(op)

    async def get(self, job_id: str) -> Job | None:
        h = await self._io(lambda: self.redis.hgetall(self.keys.job(job_id)))
        return Job.from_hash(h) if h else None

    async def cancel(self, job_id: str, tier: str) -> str | None:
        async def op() -> Any:
            return await self._cancel(
                keys=[self.keys.job(job_id), self.keys.stream(tier)],
                args=[time.time(), self.result_ttl_s, self.keys.done_channel, job_id],
            )

        status = await self._io(op)
        return status.decode() if isinstance(status, bytes) else status

    async def fetch(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` new entries, most urgent tier first; blocks up to ``block_ms`` when all are empty."""
        await self._io(self.ensure_groups)
        out: list[Entry] = []
        for tier in self.tiers:
            if len(out) >= count:
                break
            res = await self._io(
                lambda t=tier: self.redis.xreadgroup(  # type: ignore[misc]
                    self.keys.group, self.consumer, {self.keys.stream(t): ">"}, count=count - len(out)
                )
            )
            out += _entries(res, self.keys, self.tiers)
        if out or block_ms <= 0:
            return out
        streams = {self.keys.stream(t): ">" for t in self.tiers}
        res = await self._io(lambda: self.redis.xreadgroup(self.keys.group, self.consumer, streams, count=1, block=block_ms))
        return _entries(res, self.keys, self.tiers)

    async def claim(self, entry: Entry) -> Job | None:
        async def op() -> Any:
            return await self._claim(
                keys=[self.keys.job(entry.job_id), self.keys.stream(entry.tier)], args=[self.keys.group, entry.entry_id]
            )

        flat = await self._io(op)
        if not flat:
            return None
        return Job.from_hash(dict(zip(flat[::2], flat[1::2])))

    async def complete(self, job: Job, entry: Entry, outcome: Outcome) -> bool:
        fields: list[Any] = ["status", outcome.status.value, "completed_at", time.time()]
        if outcome.via is not None:
            fields += ["via", outcome.via.value]
        if outcome.response_status is not None:
            fields += ["response_status", outcome.response_status, "response_body", outcome.response_body or b""]
        if outcome.error is not None:
            fields += ["error", orjson.dumps(outcome.error)]
        if outcome.target is not None:
            fields += ["target", outcome.target]

        async def op() -> Any:
            return await self._complete(
                keys=[self.keys.job(job.id), self.keys.stream(entry.tier), self.keys.dead],
                args=[self.keys.group, entry.entry_id, self.result_ttl_s, self.keys.done_channel, job.id,
                      "1" if outcome.dead else "0", *fields],
            )

        return bool(await self._io(op))

    async def requeue(self, job: Job, entry: Entry) -> None:
        async def op() -> Any:
            return await self._requeue(
                keys=[self.keys.job(job.id), self.keys.stream(entry.tier)], args=[self.keys.group, entry.entry_id]
            )

        await self._io(op)

    async def stage(self, job: Job, entry: Entry, group: str) -> bool:
        """Move a claimed job into the staging set of a provider-batch group."""
        async def op() -> Any:
            return await self._stage(
                keys=[self.keys.job(job.id), self.keys.stream(entry.tier), self.keys.staging(group), self.keys.staging_groups],
                args=[self.keys.group, entry.entry_id, job.created_at, group],
            )

        return bool(await self._io(op))

    async def resubmit(self, job_id: str, tier: str) -> bool:
        """Send a job back to its tier's stream for the realtime path."""
        async def op() -> Any:
            return await self._resubmit(keys=[self.keys.job(job_id), self.keys.stream(tier)])

        return bool(await self._io(op))

    async def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            rows = await self._io(pipe.execute)
        return [Job.from_hash(r) if r else None for r in rows]

    async def lease(self, name: str, me: str, ttl_ms: int) -> bool:
        return bool(await self._io(lambda: self._lease(keys=[self.keys.lease(name)], args=[me, ttl_ms])))

    async def set_fields(self, job_id: str, **fields: Any) -> None:
        await self._io(lambda: self.redis.hset(self.keys.job(job_id), mapping=fields))

    async def reclaim(self, tier: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer took and did not finish within the visibility timeout."""
        await self._io(self.ensure_groups)
        res = await self._io(
            lambda: self.redis.xautoclaim(
                self.keys.stream(tier), self.keys.group, self.consumer, min_idle_ms, "0-0", count=count
            )
        )
        claimed = res[1] if res else []
        return [Entry(tier, eid.decode(), fields[b"j"].decode()) for eid, fields in claimed if fields]

    async def heartbeat(self, entries: Sequence[Entry]) -> None:
        """Reset the idle time of entries still being worked on, so nobody reclaims them."""
        by_tier: dict[str, list[str]] = {}
        for e in entries:
            by_tier.setdefault(e.tier, []).append(e.entry_id)
        for tier, ids in by_tier.items():
            await self._io(
                lambda t=tier, i=ids: self.redis.xclaim(  # type: ignore[misc]
                    self.keys.stream(t), self.keys.group, self.consumer, 0, i, justid=True
                )
            )

    async def depth(self, tier: str) -> tuple[int, float]:
        """Jobs in the tier's stream (waiting or running), and the age of the oldest in seconds."""
        stream = self.keys.stream(tier)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
            length, first = await self._io(pipe.execute)
        age = 0.0
        if first:
            ms = int(first[0][0].split(b"-")[0])
            age = max(time.time() - ms / 1000.0, 0.0)
        return int(length), age

    async def dead_letters(self) -> int:
        return int(await self._io(lambda: self.redis.xlen(self.keys.dead)))


def _entries(res: Any, keys: Keys, tiers: Sequence[str]) -> list[Entry]:
    by_stream = {keys.stream(t).encode(): t for t in tiers}
    out = []
    for stream, items in res or []:
        tier = by_stream[stream if isinstance(stream, bytes) else stream.encode()]
        for eid, fields in items:
            if fields and b"j" in fields:
                out.append(Entry(tier, eid.decode(), fields[b"j"].decode()))
    return out
