"""The gateway with tracing on, next to the same gateway with it off, at 16 connections.

Tracing is switched on the standard OpenTelemetry way (``OTEL_*`` variables):
spans go over OTLP/HTTP to a sink, a second instance of the fake upstream that
answers 200 to every POST and counts them, so the row pays for building,
batching, encoding and sending spans, as in production. The two gateways are
measured in interleaved rounds, so the ratio between them holds even when
absolute numbers drift.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request

from bench import gateway_config, services
from bench.report import Section
from bench.scenarios import SYNC_COLUMNS, Context, load_problem, sync_row
from bench.services import Service

CONNECTIONS = 16
COLUMNS = (*SYNC_COLUMNS[:5], ("vs_untraced", "req/s vs untraced"), ("errors", "errors"))


def posts(sink: Service) -> int:
    with urllib.request.urlopen(sink.url + "/stats", timeout=5) as resp:
        return int(json.loads(resp.read())["posts"])


def run(ctx: Context) -> Section:
    section = Section("tracing", f"Gateway with tracing on ({CONNECTIONS} connections)", COLUMNS)
    if importlib.util.find_spec("gateway.observability.tracing") is None:
        section.skipped = "tracing not implemented yet in the gateway"
        return section
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        section.skipped = "opentelemetry-sdk is not installed"
        return section
    stack = ctx.stack
    sink = stack.spawn(services.upstream(stack.logs, 0, 0, 1, name="otlp-sink"))
    traced = stack.spawn(services.gateway(stack.logs, "gateway-tracing", stack.gateway_config(),
                                          env=gateway_config.tracing_env(sink.url)))
    assert stack.gateway is not None
    try:
        rounds = ctx.rounds({"gateway": stack.gateway, "gateway+tracing": traced}, CONNECTIONS)
    finally:
        stack.retire(traced)  # shutdown flushes the last spans
    exported = posts(sink)
    stack.retire(sink)
    untraced_row = sync_row("gateway", CONNECTIONS, rounds["gateway"])
    traced_row = sync_row("gateway+tracing", CONNECTIONS, rounds["gateway+tracing"])
    if untraced_row["rps"]:
        traced_row["vs_untraced"] = round(traced_row["rps"] / untraced_row["rps"], 3)
    section.rows += [untraced_row, traced_row]
    section.notes.append(
        f"OTLP/HTTP export (BatchSpanProcessor) to a local sink, which received {exported:,} export requests."
    )
    problem = load_problem("gateway", CONNECTIONS, *rounds["gateway"]) or load_problem(
        "gateway+tracing", CONNECTIONS, *rounds["gateway+tracing"]
    )
    if not exported:
        problem = problem or "no spans reached the OTLP sink: tracing did not turn on"
    section.failed = problem
    return section
