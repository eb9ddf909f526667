"""The built-in load generator, for machines without wrk: asyncio + aiohttp, one loop per connection.

It is slower than wrk (the Python client shares the CPU with the servers under
test), so its req/s are lower bounds; the ratios between rows stay meaningful.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.load import LoadResult, LoadSpec, percentile


class LoadGenerator:
    name = "builtin asyncio/aiohttp load generator"

    def version(self) -> str:
        return f"aiohttp {aiohttp.__version__}"

    def run(self, spec: LoadSpec) -> LoadResult:
        return asyncio.run(self._run(spec))

    async def _run(self, spec: LoadSpec) -> LoadResult:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + spec.duration_s

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(spec.url, data=spec.body, headers=spec.headers) as resp:
                        await resp.read()
                        if resp.status >= 400:
                            errors += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        connector = aiohttp.TCPConnector(limit=spec.connections)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(spec.connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        mean = sum(latencies) / len(latencies) if latencies else 0.0
        return LoadResult(
            requests=len(latencies),
            duration_s=elapsed,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            mean_ms=mean * 1000,
            errors=errors,
        )
