"""Event-loop lag: how late the loop wakes a task that asked to sleep.

Anything that blocks the loop (a slow callback, CPU-bound work, a synchronous
call) delays every request on this process by as much; the sleeper sees it as
a late wake-up. Four samples a second cost nothing measurable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.25


async def sample(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Observe the lag of each wake-up until cancelled (run it as a daemon task)."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval_s)
        observe(max(loop.time() - before - interval_s, 0.0))
