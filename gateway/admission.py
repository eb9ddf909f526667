"""Admission control: per-provider concurrency with slots reserved per tier.

A provider has ``capacity`` slots. Each tier reserves ``reserved`` of them that
no tier of lower priority (a higher priority value) may take; a tier may use its
own reservation, any free shared slot, and the unused reservations of tiers less
urgent than itself. ``admits`` is that rule as a pure function; ``Limiter`` is
the thin asyncio wrapper that counts slots and wakes waiters in priority order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import Saturated


@dataclass(frozen=True, slots=True)
class TierShare:
    priority: int
    reserved: int


def admits(tier: str, inflight: Mapping[str, int], shares: Mapping[str, TierShare], capacity: int) -> bool:
    """Whether one more request of ``tier`` may start now."""
    total = sum(inflight.values())
    if total >= capacity:
        return False
    mine = shares[tier].priority
    held = 0
    for name, share in shares.items():
        if name != tier and share.priority <= mine:
            held += max(share.reserved - inflight.get(name, 0), 0)
    return total + 1 + held <= capacity


class Limiter:
    """Counts in-flight requests of one provider by tier; waiters are woken most urgent first."""

    def __init__(self, capacity: int, shares: Mapping[str, TierShare]) -> None:
        self.capacity = capacity
        self.shares = dict(shares)
        self.inflight: dict[str, int] = {name: 0 for name in shares}
        self._waiters: list[tuple[int, int, str, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def try_acquire(self, tier: str) -> bool:
        if self._waiters and any(w[0] <= self.shares[tier].priority for w in self._waiters):
            return False  # do not overtake a waiter at least as urgent
        if admits(tier, self.inflight, self.shares, self.capacity):
            self.inflight[tier] += 1
            return True
        return False

    async def acquire(self, tier: str, timeout: float) -> None:
        """Take a slot, waiting up to ``timeout`` seconds; raise ``Saturated`` otherwise."""
        if self.try_acquire(tier):
            return
        if timeout <= 0:
            raise Saturated("All slots for this tier are busy.", headers={"Retry-After": "1"})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.shares[tier].priority, next(self._seq), tier, fut)
        self._waiters.append(entry)
        self._waiters.sort(key=lambda w: (w[0], w[1]))
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self._forget(entry)
            raise Saturated(
                "All slots for this tier stayed busy for the admission timeout.", headers={"Retry-After": "1"}
            ) from None
        except asyncio.CancelledError:
            self._forget(entry)
            if fut.done() and not fut.cancelled():
                self.release(tier)  # granted in the same instant the caller went away
            raise

    def _forget(self, entry: tuple[int, int, str, asyncio.Future[None]]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)

    def release(self, tier: str) -> None:
        self.inflight[tier] -= 1
        self._wake()

    def _wake(self) -> None:
        granted = []
        for entry in self._waiters:
            _, _, tier, fut = entry
            if fut.done():
                granted.append(entry)
                continue
            if admits(tier, self.inflight, self.shares, self.capacity):
                self.inflight[tier] += 1
                fut.set_result(None)
                granted.append(entry)
        for entry in granted:
            self._waiters.remove(entry)

    def free_for(self, tier: str) -> int:
        """How many more requests of ``tier`` could start now (for drain sizing)."""
        n = 0
        probe = dict(self.inflight)
        while admits(tier, probe, self.shares, self.capacity):
            probe[tier] += 1
            n += 1
        return n
