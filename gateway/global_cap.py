"""An optional hard cap on a provider's concurrency across every replica, kept in Redis.

Admission (``admission.py``) is per process: N replicas may send N times a
provider's ``max_concurrency``. A provider with ``global_max_concurrency`` set
also takes a slot in a Redis sorted set of leases before each attempt. A lease
expires on its own after the tier's deadline, so a crashed replica cannot hold
slots forever. This costs two Redis round trips per attempt on that provider
only, which is why it is opt-in. If Redis does not answer, the cap fails open
(requests go ahead, counted in a log line): the sync path must not depend on Redis.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import Saturated

log = logging.getLogger("gateway.global_cap")

# KEYS: the lease set. ARGV: now_ms, lease_ms, limit, token. 1 if a slot was taken.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

POLL_S = 0.02


class GlobalCap:
    def __init__(self, redis: aioredis.Redis, key: str, limit: int) -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self._take = redis.register_script(_TAKE)

    async def acquire(self, lease_s: float, wait_s: float) -> str | None:
        """A lease token, waiting up to ``wait_s`` for a slot; ``None`` when Redis is away (fail open)."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                now_ms = int(time.time() * 1000)
                if await self._take(keys=[self.key], args=[now_ms, int(lease_s * 1000) + 1000, self.limit, token]):
                    return token
            except (RedisError, OSError):
                log.warning("global concurrency cap skipped: Redis is unavailable")
                return None
            if time.monotonic() >= deadline:
                raise Saturated("The provider's global concurrency cap is reached.", headers={"Retry-After": "1"})
            await asyncio.sleep(POLL_S)

    async def release(self, token: str | None) -> None:
        if token is None:
            return
        try:
            await self.redis.zrem(self.key, token)
        except (RedisError, OSError):
            pass  # the lease expires on its own
