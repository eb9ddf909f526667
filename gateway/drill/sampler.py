"""The status sampler: reads ``/admin/status`` every ``sample_s`` for the queue and mode plots."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


class Sampler:
    def __init__(self, gateway_url: str, admin_key: str, client: httpx.AsyncClient, every_s: float) -> None:
        self.url = gateway_url
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.client = client
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self.stopping = False

    async def run(self, t0: float) -> None:
        """Sample until ``stopping`` is set; a failed sample is skipped, not fatal."""
        while not self.stopping:
            started = time.monotonic()
            try:
                r = await self.client.get(self.url + "/admin/status", headers=self.headers, timeout=5)
                if r.status_code == 200:
                    self.samples.append(self._row(r.json(), started - t0))
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(max(self.every_s - (time.monotonic() - started), 0.05))

    @staticmethod
    def _row(status: dict[str, Any], t: float) -> dict[str, Any]:
        queue = status.get("queue") or {}
        return {
            "t": round(t, 2),
            "queue": {tier: {"depth": q.get("depth", 0), "oldest_age_s": q.get("oldest_age_s", 0.0)}
                      for tier, q in queue.items() if isinstance(q, dict)},
            "modes": {scope: m.get("mode") for scope, m in (status.get("modes") or {}).items()},
            "provider_batches": len(status.get("provider_batches") or []),
        }
