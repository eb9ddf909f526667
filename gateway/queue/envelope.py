"""The drain envelope: how fast deferred work may go to a provider.

A token bucket per provider (requests per minute and, where configured, tokens
per minute), kept in Redis and updated by one Lua script using Redis's clock,
so every replica and worker draws from the same bucket. Concurrency is bounded
separately by admission, where drains only get what the sync tiers leave free.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.queue.keys import Keys

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


class Envelope:
    def __init__(self, redis: aioredis.Redis, keys: Keys, limits: dict[str, tuple[int | None, int | None]]) -> None:
        """``limits`` maps a provider to its (rpm, tpm); ``None`` means unlimited."""
        self._keys = keys
        self._limits = limits
        self._take = redis.register_script(_TAKE)

    async def take(self, provider: str, tokens: int, scale: float = 1.0) -> float:
        """Take one request (and ``tokens``) from the provider's buckets; return seconds to wait first.

        ``scale`` < 1 shrinks the envelope (a degraded provider drains slower).
        """
        rpm, tpm = self._limits.get(provider, (None, None))
        wait_ms = 0
        if rpm:
            rate = rpm * scale / 60.0
            wait_ms = await self._take(keys=[self._keys.bucket(provider, "rpm")], args=[rate, max(rate, 1.0), 1])
        if not wait_ms and tpm:
            rate = tpm * scale / 60.0
            cost = min(tokens, int(max(rate, 1.0)))
            wait_ms = await self._take(keys=[self._keys.bucket(provider, "tpm")], args=[rate, max(rate, 1.0), cost])
        return int(wait_ms) / 1000.0
