"""Client batches: the OpenAI Batch API on top of the job queue.

A batch validates its input file, then fans each line out as a ``Job`` in the
client's batch tier, so lines are served by mini-batches or provider batches like
any deferred request, across any mix of models. Progress is counted in Redis by
a job hook; the line that settles last triggers the output and error files.

Every state change is one Lua script, and the long steps (fan-out, cancelling,
finalizing) run under a lease, so any replica can take over a step whose owner
died: a periodic sweep finds batches whose hook was missed, whose step stalled,
or whose window passed (``expired``, with partial results).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from gateway.auth import Client
from gateway.errors import GatewayError, InvalidRequest, JobConflict, QueueUnavailable
from gateway.files import OUTPUT_PURPOSE, FileRecord, FileStore, page_ids, sortable_id
from gateway.queue import batch_input
from gateway.queue.client_batch import BatchRecord, BatchStatus, batch_job_id, batch_tier, leftover_line, result_line
from gateway.queue.job import Job, JobStatus
from gateway.queue.store import Outcome

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.batches")

WINDOWS = {"24h": 86400}  # completion_window values and their seconds
LEASE_S = 60.0  # a step's owner renews its lease at least this often, or another replica takes over
FANOUT_CHUNK = 200
FINAL_CHUNK = 500
DISK_SWEEP_S = 300.0
RECONCILE_AFTER = 3  # sweeps without progress before a batch's unsettled lines are checked one by one
RUNNING = "in_progress,cancelling"  # the statuses in which lines settle

# KEYS: batch, index, open. ARGV: ttl_s, id, expires_at, then field/value pairs.
_CREATE = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"""

_IN = "string.find(',' .. ARGV[1] .. ',', ',' .. st .. ',', 1, true)"

# KEYS: batch. ARGV: statuses, now, lease_s, token, then field/value pairs.
# Takes the batch's lease when its status is one of ``statuses`` and nobody holds it.
_CLAIM = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if not st or not {_IN} then return false end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'lease_until', tonumber(ARGV[2]) + tonumber(ARGV[3]), 'lease_token', ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return st
"""

# KEYS: batch. ARGV: statuses, token ('' for any holder), then field/value pairs. Returns 'ok' or the status.
_TRANSITION = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return false end
if not {_IN} then return st end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[2] then return 'lost' end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'ok'
"""

# KEYS: batch, ids. ARGV: token, lease_until, then custom_ids. The fan-out records a chunk before queueing it.
_PUSH_IDS = """
local st = redis.call('HGET', KEYS[1], 'status')
if (st ~= 'in_progress' and st ~= 'cancelling') or redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[1] then
  return false
end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('RPUSH', KEYS[2], unpack(ids))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
return st
"""

# KEYS: batch, results. ARGV: job_id, line, kind (completed|failed|none), now, lease_s, token.
# Records a line's result once; 2 when it was the last line: the caller now holds the finalizing lease.
_SETTLE = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'in_progress' and st ~= 'cancelling' then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
if ARGV[3] ~= 'none' then redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
local settled = redis.call('HINCRBY', KEYS[1], 'settled', 1)
redis.call('HSET', KEYS[1], 'progress_at', ARGV[4])
if settled >= tonumber(redis.call('HGET', KEYS[1], 'total') or '0') then
  local final = 'completed'
  if st == 'cancelling' then final = 'cancelled' end
  redis.call('HSET', KEYS[1], 'status', 'finalizing', 'final', final, 'finalizing_at', ARGV[4],
             'lease_until', tonumber(ARGV[4]) + tonumber(ARGV[5]), 'lease_token', ARGV[6])
  return 2
end
return 1
"""


def _read_chunk(numbered: Iterator[tuple[int, bytes]], n: int) -> list[tuple[int, bytes]]:
    out = []
    for item in numbered:
        out.append(item)
        if len(out) >= n:
            break
    return out


class ClientBatches:
    """The Batch API's state and steps for one gateway process."""

    def __init__(self, gateway: Gateway) -> None:
        assert gateway.redis is not None and gateway.store is not None
        self.gw = gateway
        self.redis = gateway.redis
        self.keys = gateway.keys
        self.store = gateway.store
        self.config = gateway.config.files
        self.files = FileStore(gateway.redis, gateway.keys, gateway.config.files)
        self._create = self.redis.register_script(_CREATE)
        self._claim = self.redis.register_script(_CLAIM)
        self._transition = self.redis.register_script(_TRANSITION)
        self._push_ids = self.redis.register_script(_PUSH_IDS)
        self._settle = self.redis.register_script(_SETTLE)
        self._last_disk_sweep = 0.0

    def start(self) -> None:
        """Listen for finished jobs and sweep in the background (serve and worker processes alike)."""
        self.files.prepare()
        self.gw.job_hooks.append(self.on_job_finished)
        self.gw.tasks.start("client-batch-sweep", self._sweep_loop(), daemon=True)

    async def _io(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await op(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"The batch store is unavailable ({type(exc).__name__}).") from None

    def _step(self, name: str, coro: Any) -> None:
        self.gw.tasks.start(name, coro)

    # -- the API

    async def create(self, client: Client, input_file: FileRecord, endpoint: str, window: str,
                     metadata: dict[str, str] | None, output_ttl_s: int | None) -> BatchRecord:
        if input_file.purpose != "batch":
            raise InvalidRequest(f"The input file has purpose {input_file.purpose!r}; a batch needs 'batch'.",
                                 param="input_file_id", code="invalid_file_purpose")
        cfg = self.gw.config_client(client.name)
        tier = batch_tier(client, cfg.batch_tier if cfg else None)
        now = time.time()
        expires_at = now + min(WINDOWS[window], self.gw.config.tiers[tier].max_delay_s)
        batch_id = sortable_id("batch_")
        fields: dict[str, Any] = {
            "id": batch_id, "client": client.name, "status": BatchStatus.VALIDATING.value, "endpoint": endpoint,
            "input_file_id": input_file.id, "completion_window": window, "created_at": now, "expires_at": expires_at,
            "metadata": orjson.dumps(metadata) if metadata else "", "tier": tier, "total": 0, "completed": 0,
            "failed": 0, "settled": 0, "output_ttl_s": output_ttl_s or self.config.ttl_s,
        }
        ttl = int(expires_at - now) + max(self.config.ttl_s, output_ttl_s or 0) + 3600
        args: list[Any] = [ttl, batch_id, expires_at]
        for k, v in fields.items():
            args += [k, v]
        await self._io(self._create, keys=[self.keys.client_batch(batch_id), self.keys.client_batches(client.name),
                                           self.keys.open_client_batches], args=args)
        token = secrets.token_hex(8)
        if await self._take(batch_id, BatchStatus.VALIDATING.value, token):
            self._step(f"batch-validate-{batch_id[-8:]}", self._validate(batch_id, token))
        return BatchRecord({k: str(v) if not isinstance(v, bytes) else v.decode() for k, v in fields.items()})

    async def get(self, batch_id: str, client: str | None = None) -> BatchRecord | None:
        raw = await self._io(self.redis.hgetall, self.keys.client_batch(batch_id))
        if not raw:
            return None
        record = BatchRecord.from_hash(raw)
        return None if client is not None and record.client != client else record

    async def page(self, client: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        index = self.keys.client_batches(client)
        found: list[BatchRecord] = []
        cursor = after
        while len(found) <= limit:
            page = limit + 1 - len(found)
            ids = await self._io(page_ids, self.redis, index, cursor, page, True)
            if not ids:
                break
            records = [await self.get(i) for i in ids]
            gone = [i for i, r in zip(ids, records) if r is None]
            if gone:
                await self._io(self.redis.zrem, index, *gone)
            found += [r for r in records if r is not None]
            cursor = ids[-1]
            if len(ids) < page:
                break
        return found[:limit], len(found) > limit

    async def cancel(self, record: BatchRecord) -> BatchRecord:
        now = time.time()
        key = self.keys.client_batch(record.id)
        done = await self._io(self._transition, keys=[key], args=[
            BatchStatus.VALIDATING.value, "", "status", "cancelled", "cancelling_at", now, "cancelled_at", now])
        if done == b"ok":
            await self._io(self.redis.zrem, self.keys.open_client_batches, record.id)
        else:
            done = await self._io(self._transition, keys=[key], args=[
                BatchStatus.IN_PROGRESS.value, "", "status", "cancelling", "cancelling_at", now])
            if done == b"ok":
                self._step(f"batch-cancel-{record.id[-8:]}", self._cancel_lines(record.id))
            elif done not in (b"cancelling", b"cancelled"):
                status = done.decode() if isinstance(done, bytes) else "gone"
                raise JobConflict(f"The batch is {status}; it can no longer be cancelled.",
                                  code="batch_not_cancellable")
        return await self.get(record.id) or record

    # -- progress

    async def on_job_finished(self, job: Job, outcome: Outcome) -> None:
        """The job hook: settle the line this job serves."""
        if not job.batch_id:
            return
        kind, line = result_line(job.id, job.custom_id, outcome.status, outcome.response_status,
                                 outcome.response_body, outcome.error)
        await self._settle_line(job.batch_id, job.id, kind, line)

    async def _settle_line(self, batch_id: str, job_id: str, kind: str, line: bytes) -> None:
        token = secrets.token_hex(8)
        settled = await self._io(self._settle, keys=[self.keys.client_batch(batch_id),
                                                     self.keys.client_batch_results(batch_id)],
                                 args=[job_id, line, kind, time.time(), LEASE_S, token])
        if settled == 2:
            self._step(f"batch-finalize-{batch_id[-8:]}", self._finalize(batch_id, token))

    async def _take(self, batch_id: str, statuses: str, token: str, **fields: Any) -> str | None:
        """Claim the batch's lease (setting ``fields``); its status at the time, or ``None`` if held or moved."""
        args: list[Any] = [statuses, time.time(), LEASE_S, token]
        for k, v in fields.items():
            args += [k, v]
        st = await self._io(self._claim, keys=[self.keys.client_batch(batch_id)], args=args)
        return st.decode() if st else None

    async def _move(self, batch_id: str, statuses: str, token: str, **fields: Any) -> bool:
        args: list[Any] = [statuses, token]
        for k, v in fields.items():
            args += [k, v]
        return await self._io(self._transition, keys=[self.keys.client_batch(batch_id)], args=args) == b"ok"

    # -- steps (each runs under the batch's lease)

    async def _validate(self, batch_id: str, token: str) -> None:
        record = await self.get(batch_id)
        if record is None:
            return
        endpoint = record.h["endpoint"]
        file = await self.files.get(record.h["input_file_id"])
        path = self.files.path(file) if file is not None else None
        if path is None or not path.exists():
            result = batch_input.Validation(0, (batch_input.LineError(
                "file_not_found", "The input file no longer exists.", param="input_file_id"),))
        else:
            models = frozenset(self.gw.config.models)
            result = await asyncio.to_thread(_validate_path, path, endpoint, models)
        now = time.time()
        if not result.ok:
            errors = {"object": "list", "data": [e.to_object() for e in result.errors]}
            if await self._move(batch_id, BatchStatus.VALIDATING.value, token, status="failed", failed_at=now,
                                errors=orjson.dumps(errors), lease_until=0):
                await self._io(self.redis.zrem, self.keys.open_client_batches, batch_id)
            return
        if await self._move(batch_id, BatchStatus.VALIDATING.value, token, status="in_progress", in_progress_at=now,
                            progress_at=now, total=result.requests, lease_until=now + LEASE_S):
            await self._fan_out(batch_id, token)

    async def _fan_out(self, batch_id: str, token: str) -> None:
        """Queue every line as a job, chunk by chunk; resumable, and it stops queueing once cancelled."""
        record = await self.get(batch_id)
        file = await self.files.get(record.h["input_file_id"]) if record else None
        if record is None:
            return
        ids_key = self.keys.client_batch_ids(batch_id)
        done = int(await self._io(self.redis.llen, ids_key))
        if file is None or not self.files.path(file).exists():
            log.error("batch %s lost its input file during fan-out", batch_id)
            await self._move(batch_id, RUNNING, token, total=done, lease_until=0, fanned_out=1)
            return
        fh = await asyncio.to_thread(open, self.files.path(file), "rb")
        try:
            numbered = enumerate(iter(fh), 1)
            endpoint, models = record.h["endpoint"], frozenset(self.gw.config.models)
            index = 0
            while True:
                chunk = await asyncio.to_thread(_read_chunk, numbered, FANOUT_CHUNK)
                if not chunk:
                    break
                reqs = [r for n, raw in chunk if isinstance(r := batch_input.parse_line(raw, n, endpoint, models),
                                                            batch_input.BatchRequest)]
                first, index = index, index + len(reqs)
                if index <= done:
                    continue  # recorded before a restart: only re-queue what never made it
                if first < done:
                    await self._requeue_missing(record, reqs[: done - first], first, token)
                    reqs, first = reqs[done - first:], done
                if not reqs:
                    continue
                status = await self._io(self._push_ids, keys=[self.keys.client_batch(batch_id), ids_key],
                                        args=[token, time.time() + LEASE_S, *(r.custom_id for r in reqs)])
                if not status:
                    return  # the lease moved on (finalized or taken over)
                await self._queue(record, reqs, first, cancelled=status == b"cancelling")
        finally:
            await asyncio.to_thread(fh.close)
        await self._move(batch_id, RUNNING, token, lease_until=0, fanned_out=1)

    async def _queue(self, record: BatchRecord, reqs: Sequence[batch_input.BatchRequest], first: int,
                     cancelled: bool) -> None:
        if cancelled:
            for i, r in enumerate(reqs, first):
                job_id = batch_job_id(record.id, i)
                await self._settle_line(record.id, job_id, "none",
                                        leftover_line(job_id, r.custom_id, BatchStatus.CANCELLED))
            return
        route = batch_input.ENDPOINTS[record.h["endpoint"]]
        now = time.time()
        deadline = record.num("expires_at")
        ttl = int(max(deadline - now, 0)) + self.gw.config.queue.result_ttl_s
        jobs = [Job(id=batch_job_id(record.id, i), client=record.client, tier=record.h["tier"], model=r.model,
                    route=route, body=r.body, created_at=now, deadline=deadline, batch_id=record.id,
                    custom_id=r.custom_id) for i, r in enumerate(reqs, first)]
        for i in range(0, len(jobs), 50):
            await asyncio.gather(*(self.store.enqueue(j, ttl) for j in jobs[i:i + 50]))

    async def _requeue_missing(self, record: BatchRecord, reqs: Sequence[batch_input.BatchRequest], first: int,
                               token: str) -> None:
        """After a restart: queue the recorded lines whose jobs never got queued."""
        job_ids = [batch_job_id(record.id, i) for i in range(first, first + len(reqs))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for j in job_ids:
                pipe.exists(self.keys.job(j))
            pipe.hmget(self.keys.client_batch_results(record.id), job_ids)
            *exists, settled = await self._io(pipe.execute)
        missing = [(i, r) for i, (r, e, s) in enumerate(zip(reqs, exists, settled), first) if not e and s is None]
        status = (await self.get(record.id) or record).status
        for i, r in missing:
            await self._queue(record, [r], i, cancelled=status is BatchStatus.CANCELLING)

    async def _unsettled(self, batch_id: str) -> AsyncIterator[list[tuple[str, str, JobStatus | None]]]:
        """(job id, custom_id, job status or None) of each recorded line without a result, chunk by chunk."""
        total = int(await self._io(self.redis.llen, self.keys.client_batch_ids(batch_id)))
        for start in range(0, total, FINAL_CHUNK):
            custom_ids = [c.decode() for c in await self._io(
                self.redis.lrange, self.keys.client_batch_ids(batch_id), start, start + FINAL_CHUNK - 1)]
            job_ids = [batch_job_id(batch_id, i) for i in range(start, start + len(custom_ids))]
            results = await self._io(self.redis.hmget, self.keys.client_batch_results(batch_id), job_ids)
            open_ = [(j, c) for j, c, r in zip(job_ids, custom_ids, results) if r is None]
            async with self.redis.pipeline(transaction=False) as pipe:
                for j, _ in open_:
                    pipe.hget(self.keys.job(j), "status")
                statuses = await self._io(pipe.execute) if open_ else []
            yield [(j, c, JobStatus(s.decode()) if s else None) for (j, c), s in zip(open_, statuses)]

    async def _cancel_lines(self, batch_id: str) -> None:
        """Cancel every line still queued; running lines settle as they finish."""
        record = await self.get(batch_id)
        if record is None:
            return
        async for chunk in self._unsettled(batch_id):
            for job_id, custom_id, status in chunk:
                if status is JobStatus.QUEUED:
                    await self._cancel_line(record, job_id, custom_id)

    async def _cancel_line(self, record: BatchRecord, job_id: str, custom_id: str) -> None:
        if await self.store.cancel(job_id, record.h["tier"]) == "cancelled":
            await self._settle_line(record.id, job_id, "none", leftover_line(job_id, custom_id, BatchStatus.CANCELLED))

    async def _reconcile(self, batch_id: str, token: str) -> None:
        """Settle lines whose job ended without the hook running (a crash, or a job cancelled directly)."""
        record = await self.get(batch_id)
        if record is None:
            return
        cancelling = record.status is BatchStatus.CANCELLING
        async for chunk in self._unsettled(batch_id):
            for job_id, custom_id, status in chunk:
                job = await self.store.get(job_id) if status is None or status.terminal else None
                if job is not None and job.status.terminal:
                    kind, line = result_line(job_id, custom_id, job.status, job.response_status, job.response_body,
                                             job.error)
                    await self._settle_line(batch_id, job_id, kind, line)
                elif status is None or job is None and status.terminal:
                    await self._settle_line(batch_id, job_id, "failed",
                                            leftover_line(job_id, custom_id, BatchStatus.COMPLETED))
                elif cancelling and status is JobStatus.QUEUED:
                    await self._cancel_line(record, job_id, custom_id)
        await self._move(batch_id, RUNNING, token, lease_until=0)

    async def _finalize(self, batch_id: str, token: str) -> None:
        """Write the output and error files, then make the batch final (partial results when cut short)."""
        record = await self.get(batch_id)
        if record is None or record.status is not BatchStatus.FINALIZING:
            return
        final = BatchStatus(record.h.get("final") or "completed")
        out, err = self.files.writer(limit=1 << 62), self.files.writer(limit=1 << 62)
        completed = failed = 0
        results_key = self.keys.client_batch_results(batch_id)
        try:
            total = int(await self._io(self.redis.llen, self.keys.client_batch_ids(batch_id)))
            for start in range(0, total, FINAL_CHUNK):
                custom_ids = [c.decode() for c in await self._io(
                    self.redis.lrange, self.keys.client_batch_ids(batch_id), start, start + FINAL_CHUNK - 1)]
                job_ids = [batch_job_id(batch_id, i) for i in range(start, start + len(custom_ids))]
                results = await self._io(self.redis.hmget, results_key, job_ids)
                for job_id, custom_id, stored in zip(job_ids, custom_ids, results):
                    if stored is None:
                        stored = await self._late_line(job_id, custom_id, final)
                    line = orjson.loads(stored)
                    if line["error"] is None:
                        completed += 1
                        await out.write(stored + b"\n")
                    else:
                        failed += line["error"]["code"] not in ("batch_cancelled", "request_cancelled")
                        await err.write(stored + b"\n")
                if not await self._move(batch_id, BatchStatus.FINALIZING.value, token,
                                        lease_until=time.time() + LEASE_S):
                    raise _LeaseLost
            ttl = int(record.num("output_ttl_s")) or self.config.ttl_s
            output = await out.commit(record.client, f"{batch_id}_output.jsonl", OUTPUT_PURPOSE, ttl) \
                if out.size else None
            error = await err.commit(record.client, f"{batch_id}_error.jsonl", OUTPUT_PURPOSE, ttl) \
                if err.size else None
        except _LeaseLost:
            await out.abort()
            await err.abort()
            return
        except BaseException:
            await out.abort()
            await err.abort()
            raise
        for empty in (w for w in (out, err) if not w.size):
            await empty.abort()
        now = time.time()
        moved = await self._move(batch_id, BatchStatus.FINALIZING.value, token, status=final.value,
                                 **{f"{final.value}_at": now}, completed=completed, failed=failed, lease_until=0,
                                 output_file_id=output.id if output else "", error_file_id=error.id if error else "")
        if not moved:
            for f in (output, error):
                if f is not None:
                    await self.files.delete(f)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.open_client_batches, batch_id)
            pipe.delete(results_key, self.keys.client_batch_ids(batch_id))
            await self._io(pipe.execute)

    async def _late_line(self, job_id: str, custom_id: str, final: BatchStatus) -> bytes:
        """The line of a request the batch ends without having settled (it was queued, running, or lost)."""
        job = await self.store.get(job_id)
        if job is not None and job.status.terminal:
            return result_line(job_id, custom_id, job.status, job.response_status, job.response_body, job.error)[1]
        if job is not None and job.status is JobStatus.QUEUED:
            await self.store.cancel(job_id, job.tier)  # its result could no longer be delivered
        return leftover_line(job_id, custom_id, final)

    # -- the sweep

    async def _sweep_loop(self) -> None:
        while not self.gw.draining:
            await asyncio.sleep(self.config.sweep_s)
            try:
                await self.sweep()
                if time.monotonic() - self._last_disk_sweep > DISK_SWEEP_S:
                    self._last_disk_sweep = time.monotonic()
                    await self.files.sweep_disk()
            except GatewayError as exc:
                log.warning("batch sweep skipped: %s", exc.message)
            except Exception:  # noqa: BLE001 - one bad pass must not end the sweep for good
                log.exception("batch sweep failed")

    async def sweep(self) -> None:
        """One pass over open batches: resume stalled steps, finalize missed ones, expire late ones."""
        ids = await self._io(self.redis.zrange, self.keys.open_client_batches, 0, -1)
        for raw_id in ids:
            batch_id = raw_id.decode()
            record = await self.get(batch_id)
            if record is None or record.status.final:
                await self._io(self.redis.zrem, self.keys.open_client_batches, batch_id)
                continue
            await self._sweep_one(record)

    async def _sweep_one(self, record: BatchRecord) -> None:
        now = time.time()
        token = secrets.token_hex(8)
        batch_id, status = record.id, record.status
        short = batch_id[-8:]
        if status is BatchStatus.VALIDATING:
            if await self._take(batch_id, status.value, token):
                self._step(f"batch-validate-{short}", self._validate(batch_id, token))
        elif status is BatchStatus.FINALIZING:
            if await self._take(batch_id, status.value, token):
                self._step(f"batch-finalize-{short}", self._finalize(batch_id, token))
        elif now >= record.num("expires_at"):
            if await self._take(batch_id, RUNNING, token, status="finalizing", final="expired", finalizing_at=now):
                self._step(f"batch-finalize-{short}", self._finalize(batch_id, token))
        elif not record.h.get("fanned_out"):
            if await self._take(batch_id, RUNNING, token):
                self._step(f"batch-fanout-{short}", self._fan_out(batch_id, token))
        elif record.num("settled") >= record.num("total"):
            final = "cancelled" if status is BatchStatus.CANCELLING else "completed"
            if await self._take(batch_id, RUNNING, token, status="finalizing", final=final, finalizing_at=now):
                self._step(f"batch-finalize-{short}", self._finalize(batch_id, token))
        elif now - max(record.num("progress_at"), record.num("reconciled_at")) > RECONCILE_AFTER * self.config.sweep_s:
            if await self._take(batch_id, RUNNING, token, reconciled_at=now):
                self._step(f"batch-reconcile-{short}", self._reconcile(batch_id, token))


class _LeaseLost(Exception):
    """Another replica took over a step: this one stops without writing."""


def _validate_path(path: Any, endpoint: str, models: frozenset[str]) -> batch_input.Validation:
    with open(path, "rb") as fh:
        return batch_input.validate(fh, endpoint, models)
