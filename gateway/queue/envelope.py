"""The drain envelope: how fast deferred work may go to a provider.

A token bucket per provider (requests per minute and, where configured, tokens
per minute), kept in Redis and updated by one Lua script using Redis's clock,
so every replica and worker draws from the same bucket. Concurrency is bounded
separately by admission, where drains only get what the sync tiers leave free.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import QueueUnavailable
from gateway.queue.keys import Keys
from gateway.quota import Buckets

class Envelope:
    def __init__(self, redis: aioredis.Redis, keys: Keys, limits: dict[str, tuple[int | None, int | None]]) -> None:
        """``limits`` maps a provider to its (rpm, tpm); ``None`` means unlimited."""
        self._keys = keys
        self._limits = limits
        self._buckets = Buckets(redis)

    async def take(self, provider: str, tokens: int, scale: float = 1.0) -> float:
        """Take one request (and ``tokens``) from the provider's buckets; return seconds to wait first.

        ``scale`` < 1 shrinks the envelope (a degraded provider drains slower).
        """
        rpm, tpm = self._limits.get(provider, (None, None))
        try:
            return await self._buckets.take_per_minute(
                self._keys.bucket(provider, "rpm"), rpm, self._keys.bucket(provider, "tpm"), tpm, tokens, scale
            )
        except (RedisError, OSError) as exc:  # converted where it enters, so the drainer can back off
            raise QueueUnavailable(f"The drain envelope is unavailable ({type(exc).__name__}).") from None
