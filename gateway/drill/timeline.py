"""The incident timeline: scenario incidents turned into behaviour changes on the simulators, at their times.

``steps`` is pure: each incident becomes a change at ``start_s`` and a change
back to the provider's base behaviour at ``end_s``. ``Timeline.play`` sends them
with ``PUT /_sim/behaviour`` and records when each one actually landed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.drill.scenario import IncidentSpec


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    provider: str
    label: str
    change: dict[str, Any]


def steps(incidents: list[IncidentSpec], base: dict[str, dict[str, Any]], duration_s: float) -> list[Step]:
    """Start and end changes in time order; an incident running past the end is reverted at the end."""
    out: list[Step] = []
    for inc in incidents:
        out.append(Step(inc.start_s, inc.provider, f"{inc.label}: start", dict(inc.behaviour)))
        revert = {k: base[inc.provider][k] for k in inc.behaviour}
        out.append(Step(min(inc.end_s, duration_s), inc.provider, f"{inc.label}: end", revert))
    return sorted(out, key=lambda s: s.at_s)


class Timeline:
    def __init__(self, sim_urls: dict[str, str], client: httpx.AsyncClient) -> None:
        self.sim_urls = sim_urls
        self.client = client
        self.applied: list[dict[str, Any]] = []

    async def base(self) -> dict[str, dict[str, Any]]:
        """Each simulator's behaviour before the incidents."""
        out = {}
        for name, url in self.sim_urls.items():
            r = await self.client.get(url + "/_sim/behaviour")
            r.raise_for_status()
            out[name] = r.json()
        return out

    async def play(self, plan: list[Step], t0: float) -> None:
        """Apply each step at ``t0 + at_s`` (``t0`` on the monotonic clock)."""
        for step in plan:
            delay = t0 + step.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            r = await self.client.put(self.sim_urls[step.provider] + "/_sim/behaviour", json=step.change)
            r.raise_for_status()
            self.applied.append({"t": round(time.monotonic() - t0, 3), "provider": step.provider, "label": step.label,
                                 "change": step.change})
