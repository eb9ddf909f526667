"""Memory: the gateway's RSS after a warm-up and after N more requests, on a fresh gateway process.

A leak of even a few hundred bytes per request shows as growth here; the
issue's bound is 10% between the two readings.
"""

from __future__ import annotations

import time

from bench import services
from bench.load import LoadSpec
from bench.report import Section
from bench.scenarios import Context, load_problem

MiB = 1024 * 1024

COLUMNS = (
    ("rss_idle_mib", "RSS idle MiB"),
    ("rss_warm_mib", "RSS after warm-up MiB"),
    ("rss_after_mib", "RSS after load MiB"),
    ("requests", "requests between readings"),
    ("growth_pct", "growth %"),
    ("errors", "errors"),
)


def run(ctx: Context) -> Section:
    plan, stack = ctx.plan, ctx.stack
    section = Section("memory", "Memory (fresh gateway process)", COLUMNS)
    gateway = stack.spawn(services.gateway(stack.logs, "gateway-memory", stack.gateway_config()))
    try:
        idle = gateway.rss_bytes()
        warm = ctx.driver.run(LoadSpec(gateway.url, plan.memory_connections, plan.memory_warmup_s))
        rss_warm = gateway.rss_bytes()
        requests = errors = 0
        stop_at = time.monotonic() + plan.memory_max_s
        # Stop at the first error (the numbers would mean nothing), and at the time cap (a slow, shared machine).
        while requests < plan.memory_requests and not warm.errors and not errors and time.monotonic() < stop_at:
            result = ctx.driver.run(LoadSpec(gateway.url, plan.memory_connections, plan.memory_chunk_s))
            if not result.requests:
                break
            requests += result.requests
            errors += result.errors
        rss_after = gateway.rss_bytes()
    finally:
        stack.retire(gateway)
    section.rows.append({
        "rss_idle_mib": idle / MiB,
        "rss_warm_mib": rss_warm / MiB,
        "rss_after_mib": rss_after / MiB,
        "warmup_requests": warm.requests,
        "requests": requests,
        "planned_requests": plan.memory_requests,
        "growth_pct": 100.0 * (rss_after - rss_warm) / rss_warm,
        "errors": errors,
    })
    section.notes.append(
        f"Warm-up: {warm.requests:,} requests over {plan.memory_warmup_s:g} s "
        f"at {plan.memory_connections} connections; "
        f"then at least {plan.memory_requests:,} requests in {plan.memory_chunk_s:g} s chunks."
    )
    problem = load_problem("gateway (memory warm-up)", plan.memory_connections, warm)
    if errors:
        problem = f"{errors:,} errors of {requests:,} requests during the memory run"
    elif not requests:
        problem = problem or "no requests completed after the warm-up"
    elif requests < plan.memory_requests:
        section.notes.append(
            f"Stopped at the {plan.memory_max_s:g} s cap after {requests:,} of {plan.memory_requests:,} requests: "
            "the gateway served fewer requests per second than the plan assumes (is the machine busy?)."
        )
    section.failed = problem
    return section
