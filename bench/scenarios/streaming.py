"""Streaming: the time to first token and the per-chunk delay that each hop adds.

One stream at a time, the same requests to every target. "Added" is the
target's median minus the direct median, so the client's own cost cancels out.
"""

from __future__ import annotations

from typing import Any

from bench import stream_probe
from bench.report import Section
from bench.scenarios import Context

COLUMNS = (
    ("target", "target"),
    ("requests", "streams"),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p99_ms", "TTFT p99 ms"),
    ("added_ttft_p50_ms", "added TTFT p50 ms"),
    ("chunk_delay_p50_ms", "chunk delay p50 ms"),
    ("chunk_delay_p99_ms", "chunk delay p99 ms"),
    ("added_chunk_delay_p50_ms", "added chunk delay p50 ms"),
    ("total_p50_ms", "stream p50 ms"),
    ("errors", "errors"),
)


def run(ctx: Context) -> Section:
    plan = ctx.plan
    section = Section("streaming", "Streaming (one stream at a time)", COLUMNS)
    section.notes.append(
        f"The fake upstream sends its first chunk after {plan.first_token_ms:g} ms, then {plan.chunks} content "
        f"chunks {plan.chunk_ms:g} ms apart. Chunk delay: upstream write to client read, per chunk after the first "
        "(same CLOCK_MONOTONIC on both sides)."
    )
    problems = []
    direct: dict[str, Any] = {}
    for name, service in ctx.stack.targets().items():
        summary = stream_probe.probe(service.url, plan.stream_requests, plan.stream_warmup)
        row = {"target": name, **summary.as_dict()}
        if name == "direct":
            direct = row
        else:
            row["added_ttft_p50_ms"] = summary.ttft_p50_ms - direct["ttft_p50_ms"]
            row["added_chunk_delay_p50_ms"] = summary.chunk_delay_p50_ms - direct["chunk_delay_p50_ms"]
        section.rows.append(row)
        if summary.errors or not summary.requests:
            problems.append(f"{name}: {summary.errors} failed streams, {summary.requests} complete")
    if problems:
        section.failed = "; ".join(problems)
    return section
