"""Quotas kept in Redis and shared by every replica: token buckets, and per-client limits.

``Buckets`` is one Lua script (Redis's clock, so replicas agree on time) that
both the drain envelope and client limits draw from. ``ClientLimits`` applies a
client's ``limits`` (requests and tokens per minute, requests in flight) before
its request goes anywhere; clients without limits cost no Redis round trip.
Limits fail open when Redis does not answer: the sync path never depends on it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import ClientLimitsConfig
from gateway.errors import RateLimited, Saturated
from gateway.global_cap import GlobalCap

log = logging.getLogger("gateway.quota")

# KEYS: bucket. ARGV: rate per second, burst, cost. Returns 0 when taken, else ms to wait.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) / 1000 * rate)
local ttl = math.ceil(burst / rate * 1000) + 1000
if tokens >= cost then
  redis.call('HSET', KEYS[1], 'tokens', tokens - cost, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 0
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return math.ceil((cost - tokens) / rate * 1000)
"""


class Buckets:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._take = redis.register_script(_TAKE)

    async def take(self, key: str, rate_per_s: float, burst: float, cost: float) -> float:
        """Take ``cost`` from the bucket; 0 when taken, else the seconds until it could be."""
        return int(await self._take(keys=[key], args=[rate_per_s, burst, min(cost, burst)])) / 1000.0

    async def take_per_minute(self, rpm_key: str, rpm: int | None, tpm_key: str, tpm: int | None,
                              tokens: int, scale: float = 1.0) -> float:
        """One request and ``tokens`` against per-minute limits with one second of burst."""
        if rpm:
            rate = rpm * scale / 60.0
            wait = await self.take(rpm_key, rate, max(rate, 1.0), 1)
            if wait:
                return wait
        if tpm:
            rate = tpm * scale / 60.0
            return await self.take(tpm_key, rate, max(rate, 1.0), tokens)
        return 0.0


class ClientLimits:
    def __init__(self, redis: aioredis.Redis, keys: Any, limits: dict[str, ClientLimitsConfig]) -> None:
        self._keys = keys
        self._limits = limits
        self._buckets = Buckets(redis)
        self._inflight = {name: GlobalCap(redis, keys.client_inflight(name), cfg.max_inflight)
                          for name, cfg in limits.items() if cfg.max_inflight}

    def limited(self, client: str) -> bool:
        return client in self._limits

    async def admit(self, client: str, tokens: int, lease_s: float) -> Lease | None:
        """Check the client's rates and take an in-flight slot; raise 429 ``RateLimited`` when over."""
        cfg = self._limits.get(client)
        if cfg is None:
            return None
        try:
            wait = await self._buckets.take_per_minute(
                self._keys.client_bucket(client, "rpm"), cfg.rpm, self._keys.client_bucket(client, "tpm"), cfg.tpm, tokens
            )
        except (RedisError, OSError):
            log.warning("client limits skipped: Redis is unavailable")
            return None
        if wait > 0:
            raise RateLimited(f"Client {client!r} is over its rate limit.",
                              headers={"Retry-After": str(max(math.ceil(wait), 1))})
        cap = self._inflight.get(client)
        if cap is None:
            return None
        try:
            token = await cap.acquire(lease_s, 0.0)
        except Saturated as exc:
            raise RateLimited(f"Client {client!r} has too many requests in flight.",
                              headers={"Retry-After": "1"}, code="too_many_inflight") from exc
        return Lease(cap, token)


class Lease:
    __slots__ = ("cap", "token")

    def __init__(self, cap: GlobalCap, token: str | None) -> None:
        self.cap = cap
        self.token = token

    async def release(self) -> None:
        await self.cap.release(self.token)
        self.token = None
