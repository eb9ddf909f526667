"""The deferred path: enqueue rate (``Prefer: respond-async`` → 202) and drain rate.

Enqueue runs against a gateway started with ``--no-worker``, so nothing drains
while jobs pile up in Redis. Drain then starts a gateway with its worker loops
and times how long its ``gateway_jobs_total`` takes to count every job. Both
use Redis database 1, so the main gateway's own drainer (database 0) cannot
take the jobs.

Until the queue lands the gateway answers 503 ``queue_unavailable``; the
scenario then reports "not available" instead of numbers.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson

from bench import services
from bench.payloads import CHAT_BODY, CHAT_PATH, headers
from bench.report import Section
from bench.scenarios import Context, load_problem
from bench.services import Service

ASYNC_HEADERS = {"Prefer": "respond-async", "X-Gateway-Tier": "background"}
DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.05
REDIS_DB = 1
CONNECTIONS = 16

COLUMNS = (
    ("phase", "phase"),
    ("jobs", "jobs"),
    ("jobs_per_s", "jobs/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("errors", "errors"),
)


def probe(gateway: Service) -> tuple[int, str]:
    """One async request: its status and error code (if any)."""
    request = urllib.request.Request(
        gateway.url + CHAT_PATH, data=CHAT_BODY, headers=headers(ASYNC_HEADERS), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as err:
        try:
            code = orjson.loads(err.read()).get("error", {}).get("code") or ""
        except (orjson.JSONDecodeError, AttributeError):
            code = ""
        return err.code, str(code)


def metric_sum(service: Service, name: str) -> float:
    """The sum of a Prometheus metric over every label set, from ``/metrics``."""
    with urllib.request.urlopen(service.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    prefix = name + "{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def drain_rate(drainer: Service, expected: int, spawned_at: float) -> tuple[int, float]:
    """Jobs finished, and the rate between the first and the last poll that saw the count move.

    When the whole drain fits between the process start and the first poll, the
    rate is a lower bound: the count over the time since the process was spawned.
    """
    first: tuple[float, float] | None = None  # (time, count) of the first poll that saw jobs done
    last = (time.monotonic(), 0.0)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        now, done = time.monotonic(), metric_sum(drainer, "gateway_jobs_total")
        if done != last[1]:
            first = first or (now, done)
            last = (now, done)
        elif done >= expected and metric_sum(drainer, "gateway_queue_depth") == 0:
            break
    if first is None:
        return 0, 0.0
    if last[0] > first[0]:
        return int(last[1]), (last[1] - first[1]) / (last[0] - first[0])
    return int(last[1]), last[1] / (last[0] - spawned_at)


def run(ctx: Context) -> Section:
    section = Section("queue", "Deferred path: enqueue and drain", COLUMNS)
    assert ctx.stack.gateway is not None
    status, code = probe(ctx.stack.gateway)
    if status == 503 and code == "queue_unavailable":
        section.skipped = "not available: the gateway answers 503 queue_unavailable (the queue has not landed yet)"
        return section
    if status != 202:
        section.failed = f"an async request answered {status} {code}, not 202"
        return section
    stack = ctx.stack
    config = stack.gateway_config(redis_db=REDIS_DB)
    enqueuer = stack.spawn(services.gateway(stack.logs, "gateway-enqueue", config, "--no-worker"))
    try:
        result = ctx.load(enqueuer, CONNECTIONS, ASYNC_HEADERS)
    finally:
        stack.retire(enqueuer)
    section.rows.append({"phase": "enqueue (202)", "jobs": result.requests, "jobs_per_s": result.rps,
                         "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "errors": result.errors})
    problem = load_problem("enqueue", CONNECTIONS, result)
    spawned_at = time.monotonic()
    drainer = stack.spawn(services.gateway(stack.logs, "gateway-drain", config))
    try:
        done, rate = drain_rate(drainer, result.requests, spawned_at)
    finally:
        stack.retire(drainer)
    section.rows.append({"phase": "drain", "jobs": done, "jobs_per_s": rate,
                         "errors": max(result.requests - done, 0)})
    section.notes.append(
        f"Enqueue: {CONNECTIONS} connections against a gateway with --no-worker (warm-up jobs are drained too). "
        "Drain: a gateway with its worker loops, "
        f"rate from the first to the last change of its gateway_jobs_total (polled every {POLL_S * 1000:g} ms), "
        "until it counts every job and gateway_queue_depth reads 0."
    )
    if done < result.requests:
        problem = problem or f"drained {done} of {result.requests} jobs in {DRAIN_TIMEOUT_S:g} s"
    section.failed = problem
    return section
