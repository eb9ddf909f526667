"""A streaming client that times each request: time to first token, and per-chunk delivery delay.

Requests run one at a time on a kept-alive connection, so each number is the
latency of one stream, not a queueing effect. The fake upstream stamps every
chunk with its CLOCK_MONOTONIC send time (``bench_sent_ns``); the client reads
the same clock when the chunk arrives, so ``chunk delay`` is the time a chunk
spent between the upstream's write and the client's read, hops included.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from bench.load import percentile
from bench.payloads import CHAT_PATH, STREAM_BODY, headers

_SENT = re.compile(rb'"bench_sent_ns":(\d+)')
DONE = b"data: [DONE]"


@dataclass(frozen=True)
class StreamTiming:
    """One stream as the client saw it (nanoseconds, CLOCK_MONOTONIC)."""

    ttft_ns: int
    chunk_delays_ns: list[int]  # every stamped chunk after the first: arrival minus upstream send
    total_ns: int
    events: int


@dataclass(frozen=True)
class StreamSummary:
    requests: int
    errors: int
    events_per_stream: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    chunk_delay_p50_ms: float
    chunk_delay_p99_ms: float
    total_p50_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _one(session: aiohttp.ClientSession, url: str) -> StreamTiming:
    started = time.monotonic_ns()
    first = 0
    events = 0
    delays: list[int] = []
    buf = b""
    done = False
    async with session.post(url, data=STREAM_BODY, headers=headers()) as resp:
        if resp.status != 200:
            raise RuntimeError(f"stream answered {resp.status}: {(await resp.read())[:300]!r}")
        async for chunk in resp.content.iter_any():
            now = time.monotonic_ns()
            buf += chunk
            *complete, buf = buf.split(b"\n\n")
            for ev in complete:
                if not ev.strip():
                    continue
                events += 1
                done = done or ev.startswith(DONE)
                if not first:
                    first = now
                    continue
                m = _SENT.search(ev)
                if m:
                    delays.append(now - int(m.group(1)))
    if not done or not first:
        raise RuntimeError("the stream ended without [DONE]")
    return StreamTiming(first - started, delays, time.monotonic_ns() - started, events)


def summarize(timings: list[StreamTiming], errors: int) -> StreamSummary:
    ttft = sorted(t.ttft_ns / 1e6 for t in timings)
    delays = sorted(d / 1e6 for t in timings for d in t.chunk_delays_ns)
    totals = sorted(t.total_ns / 1e6 for t in timings)
    return StreamSummary(
        requests=len(timings),
        errors=errors,
        events_per_stream=statistics.fmean(t.events for t in timings) if timings else 0.0,
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p99_ms=percentile(ttft, 99),
        chunk_delay_p50_ms=percentile(delays, 50),
        chunk_delay_p99_ms=percentile(delays, 99),
        total_p50_ms=percentile(totals, 50),
    )


async def _probe(base_url: str, requests: int, warmup: int) -> StreamSummary:
    url = base_url + CHAT_PATH
    timings: list[StreamTiming] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i in range(warmup + requests):
            try:
                timing = await _one(session, url)
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
                errors += 1
                continue
            if i >= warmup:
                timings.append(timing)
    return summarize(timings, errors)


def probe(base_url: str, requests: int, warmup: int) -> StreamSummary:
    """Stream ``requests`` chat completions one after another (after ``warmup`` untimed ones)."""
    return asyncio.run(_probe(base_url, requests, warmup))
