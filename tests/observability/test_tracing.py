"""Traces: GenAI attributes on upstream spans, and links from worker spans back to the enqueuing request.

The gateway runs in this process (uvicorn in a thread) so its spans land in an
in-memory exporter; everything else is real: the fake upstream, Redis, the SDK.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import config as config_mod
from gateway.app import Gateway, build_app
from gateway.observability.tracing import Tracing, wanted
from tests.conftest import CLIENT_KEY, base_config
from tests.support.net import free_port, wait_http
from tests.support.upstream import Behaviour


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_follows_the_standard_otel_variables(env, expected):
    assert wanted(env) is expected
    assert Tracing.from_env(env).enabled is expected


def test_tracing_off_builds_nothing():
    t = Tracing.from_env({})
    assert t.enabled is False and t.provider is None


class InProcessGateway:
    def __init__(self, cfg: dict, tracing: Tracing) -> None:
        self.gateway = Gateway(config_mod.parse(cfg, {}), tracing=tracing)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(self.gateway), host="127.0.0.1", port=self.port,
                                                    loop="asyncio", lifespan="on", log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcessGateway:
        self.thread.start()
        wait_http(self.url + "/healthz")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def traced(upstream, redis_server):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = base_config(upstream, redis_server.url)
    cfg["queue"] = {"namespace": "tracing", "mini_batch_wait_s": 0.05}
    with InProcessGateway(cfg, Tracing(provider)) as gw:
        yield gw, exporter


def spans_named(exporter, prefix: str):
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_upstream_span_carries_genai_attributes_under_the_server_span(traced):
    gw, exporter = traced
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    server = wait_for(lambda: spans_named(exporter, "POST /v1/chat/completions"))[0]
    attempt = spans_named(exporter, "chat p-chat")[0]
    assert server.kind is SpanKind.SERVER and attempt.kind is SpanKind.CLIENT
    assert attempt.parent.span_id == server.context.span_id
    a = attempt.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "p-chat"
    assert a["gen_ai.response.model"] == "p-chat"
    assert a["gen_ai.usage.input_tokens"] == 7 and a["gen_ai.usage.output_tokens"] == 5
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["server.address"] == "127.0.0.1"
    assert a["gateway.attempt"] == 1 and a["gateway.fallback_stage"] == 1
    assert server.attributes["gateway.tier"] == "interactive"
    assert server.attributes["gateway.mode"] == "normal"
    assert server.attributes["http.response.status_code"] == 200


def test_each_attempt_of_a_fallback_has_its_own_span_and_stage(traced, upstream):
    gw, exporter = traced
    upstream.script("p-chat", Behaviour(status=500), Behaviour(status=500))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    wait_for(lambda: spans_named(exporter, "chat s-chat"))
    primary = spans_named(exporter, "chat p-chat")
    secondary = spans_named(exporter, "chat s-chat")
    assert [s.attributes["gateway.attempt"] for s in primary] == [1, 2]
    assert all(s.attributes["error.type"] == "500" for s in primary)
    assert secondary[0].attributes["gateway.attempt"] == 3
    assert secondary[0].attributes["gateway.fallback_stage"] == 2


def test_streamed_attempt_span_ends_with_usage(traced):
    gw, exporter = traced
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert chunks
    attempt = wait_for(lambda: spans_named(exporter, "chat p-chat"))[0]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert tuple(attempt.attributes["gen_ai.response.finish_reasons"]) == ("stop",)


def test_worker_span_links_back_to_the_enqueuing_request(traced):
    gw, exporter = traced
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                                             "Prefer": "respond-async"},
                   json={"model": "chat", "messages": [{"role": "user", "content": "later"}]})
    assert r.status_code == 202
    job_id = r.json()["id"]
    job_span = wait_for(lambda: [s for s in spans_named(exporter, "gateway.job")
                                 if s.attributes["gateway.job.id"] == job_id])[0]
    server = [s for s in spans_named(exporter, "POST /v1/chat/completions")
              if s.attributes["http.response.status_code"] == 202][0]
    assert job_span.context.trace_id != server.context.trace_id  # its own trace ...
    assert [link.context.span_id for link in job_span.links] == [server.context.span_id]  # ... linked back
    attempt = wait_for(lambda: [s for s in spans_named(exporter, "chat p-chat")
                                if s.parent is not None and s.parent.span_id == job_span.context.span_id])[0]
    assert attempt.attributes["gen_ai.request.model"] == "p-chat"
