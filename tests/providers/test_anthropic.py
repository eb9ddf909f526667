"""Provider kind ``anthropic`` against the simulator's fake Anthropic API.

The fakes (``build_simulator_app``, served by uvicorn in a thread) check what
the real API checks: headers, unknown fields, alternating roles, tool results.
A live gateway with ``anthropic`` providers is driven by the official ``openai``
SDK; the batch calls run the provider's own I/O wrapper against the fake.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import httpx
import openai
import orjson
import pytest
import uvicorn

from gateway.config import ProviderConfig, SimulatorConfig
from gateway.errors import AttemptFailed
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import BatchItem, BatchState, Call, Deadlines, Usage
from gateway.simulator_server import build_simulator_app
from tests.conftest import CLIENT_KEY, base_config
from tests.support.net import free_port, wait_http
from tests.support.sdk import sdk

PROVIDER_KEY = "sk-ant-provider-secret"
BUSY_KEY = "sk-ant-busy-secret"
MODEL = "claude-haiku-4-5"
WORDS = "the gateway routes each request to a tier and serves it well the gateway routes each"  # 16 simulator words
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city", "unit"]}}}
FAST = {"latency_ms": 1, "latency_jitter_ms": 0, "first_token_ms": 1, "chunk_interval_ms": 0, "batch_latency_ms": 300}


class FakeAnthropicServer:
    """The simulator app on a free port, in a thread; its behaviour is changed over HTTP, as in a drill."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = build_simulator_app(SimulatorConfig(**FAST), seed=11)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="asyncio", http="h11", lifespan="off",
                                access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-anthropic-{self.port}", daemon=True)
        self.http = httpx.Client(base_url=self.url, timeout=5)  # one client: building one costs ~0.1 s

    def start(self) -> FakeAnthropicServer:
        self._thread.start()
        wait_http(self.url + "/_sim/behaviour")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self.http.close()

    def behave(self, **changes: Any) -> None:
        self.http.put("/_sim/behaviour", json=changes).raise_for_status()

    def control(self, **changes: Any) -> dict[str, Any]:
        response = self.http.put("/_sim/anthropic", json=changes)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.behave(rate_limited_ratio=0.0, error_ratio=0.0, **FAST)
        self.control(clear=True, batch_expired_ratio=0.0)

    def seen(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.control()["requests"] if path is None or r["path"] == path]


@pytest.fixture(scope="module")
def fakes():
    servers = {"good": FakeAnthropicServer().start(), "busy": FakeAnthropicServer().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def fake(fakes) -> FakeAnthropicServer:
    for server in fakes.values():
        server.reset()
    return fakes["good"]


@pytest.fixture
def busy(fakes, fake) -> FakeAnthropicServer:
    return fakes["busy"]


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server, fakes):
    providers = {
        "claude": {"kind": "anthropic", "base_url": fakes["good"].url, "api_key": PROVIDER_KEY, "max_concurrency": 8},
        # a trailing /v1 on the base URL is tolerated
        "claude-busy": {"kind": "anthropic", "base_url": fakes["busy"].url + "/v1", "api_key": BUSY_KEY,
                        "max_concurrency": 8, "circuit": {"failure_threshold": 50, "cooldown_s": 1.0}},
    }
    models = {
        "claude": {"targets": [{"provider": "claude", "model": MODEL}]},
        "claude-fallback": {"targets": [{"provider": "claude-busy", "model": "claude-busy-1"},
                                        {"provider": "claude", "model": MODEL}]},
    }
    return make_module_gateway(base_config(upstream_server, redis_server.url, providers=providers, models=models))


@pytest.fixture(scope="module")
def oai(gateway):
    with sdk(gateway, CLIENT_KEY) as c:  # closed, so no socket is left to the garbage collector
        yield c


def hello(text: str = "hello") -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# -- realtime, through the gateway and the openai SDK


def test_plain_chat_and_what_reaches_the_provider(oai, fake):
    raw = oai.chat.completions.with_raw_response.create(
        model="claude", messages=hello(), temperature=1.5, user="u-1", seed=3, logprobs=False,
        extra_body={"my_vendor_field": {"a": 1}})
    completion = raw.parse()
    assert raw.headers["x-gateway-target"] == f"claude/{MODEL}"
    assert completion.object == "chat.completion" and completion.id.startswith("msg_")
    assert completion.model == MODEL
    assert completion.choices[0].message.content == WORDS
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 16 and completion.usage.total_tokens == completion.usage.prompt_tokens + 16

    (seen,) = fake.seen("/v1/messages")
    assert seen["headers"]["x-api-key"] == PROVIDER_KEY
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["headers"]["content-type"] == "application/json"
    assert "authorization" not in seen["headers"]
    assert CLIENT_KEY not in json.dumps(fake.control()["requests"])
    assert seen["body"] == {"model": MODEL, "max_tokens": 4096, "system": "be brief",
                            "messages": [{"role": "user", "content": "hello"}], "temperature": 1.0,
                            "metadata": {"user_id": "u-1"}}


@pytest.mark.parametrize(
    "extra,content,finish",
    [
        ({"stop": ["request"]}, "the gateway routes each ", "stop"),
        ({"max_tokens": 3}, "the gateway routes", "length"),
        ({"max_completion_tokens": 2}, "the gateway", "length"),
    ],
)
def test_stop_sequences_and_length(oai, fake, extra, content, finish):
    completion = oai.chat.completions.create(model="claude", messages=hello(), **extra)
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == (content, finish)


@pytest.mark.parametrize("include_usage", [True, False])
def test_streaming_chat(oai, fake, include_usage):
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(oai.chat.completions.create(model="claude", messages=hello(), stream=True, **options))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == WORDS
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert all(c.object == "chat.completion.chunk" and c.id.startswith("msg_") for c in chunks)
    usage = [c.usage for c in chunks if c.usage]
    if include_usage:
        assert not chunks[-1].choices and len(usage) == 1 and usage[0].completion_tokens == 16
    else:
        assert usage == [] and all(c.choices for c in chunks)
    (seen,) = fake.seen("/v1/messages")
    assert seen["body"]["stream"] is True and "stream_options" not in seen["body"]


def test_tools_round_trip(oai, fake):
    c = oai
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo? Use get_weather."}]
    first = c.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me call get_weather."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("toolu_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sample", "unit": "C"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"})
    second = c.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The tool said: 18 degrees and sunny"
    assert second.choices[0].message.tool_calls is None

    sent = fake.seen("/v1/messages")[1]["body"]
    assert sent["tools"] == [{"name": "get_weather", "description": "Current weather for a city",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "18 degrees and sunny"}]


@pytest.mark.parametrize(
    "tool_choice,expected",
    [("required", {"type": "any"}), ({"type": "function", "function": {"name": "get_weather"}},
                                     {"type": "tool", "name": "get_weather"})],
)
def test_forced_tool_choice_streamed(oai, fake, tool_choice, expected):
    stream = oai.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=tool_choice,
        parallel_tool_calls=False, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finish.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or ():
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert finish == ["tool_calls"]
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_")
    assert json.loads(calls[0]["arguments"]) == {"city": "sample", "unit": "C"}
    (seen,) = fake.seen("/v1/messages")
    assert seen["body"]["tool_choice"] == {**expected, "disable_parallel_tool_use": True}


@pytest.mark.parametrize("fault", ["error_ratio", "rate_limited_ratio"])
def test_overloaded_and_rate_limited_are_retried_then_fall_back(oai, busy, fake, fault):
    busy.behave(**{fault: 1.0})
    raw = oai.chat.completions.with_raw_response.create(model="claude-fallback", messages=hello())
    assert raw.parse().choices[0].message.content == WORDS
    assert raw.headers["x-gateway-target"] == f"claude/{MODEL}"
    assert raw.headers["x-gateway-attempts"] == "3"  # two tries on the busy target (retries: 1), then the fallback
    tried = busy.seen("/v1/messages")
    assert len(tried) == 2 and all(r["headers"]["x-api-key"] == BUSY_KEY for r in tried)
    assert len(fake.seen("/v1/messages")) == 1


def test_a_stream_falls_back_when_the_first_target_is_overloaded(oai, busy, fake):
    busy.behave(error_ratio=1.0)
    chunks = list(oai.chat.completions.create(model="claude-fallback", messages=hello(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WORDS
    assert len(busy.seen("/v1/messages")) == 2


def test_an_upstream_400_is_passed_through_openai_shaped(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="claude", messages=hello(), tools=[WEATHER],
                                    tool_choice={"type": "function", "function": {"name": "no_such_tool"}})
    assert err.value.status_code == 400
    assert err.value.body == {"message": "tool_choice.name: names no tool",
                              "type": "invalid_request_error", "param": None, "code": None}
    assert err.value.response.headers["x-should-retry"] == "false"
    assert len(fake.seen("/v1/messages")) == 1  # permanent: not retried


def test_an_untranslatable_request_fails_before_the_provider(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert err.value.body["param"] == "messages[0].content[0]"
    assert "audio" in err.value.body["message"]
    assert fake.seen("/v1/messages") == []


def test_other_routes_are_a_clear_permanent_failure(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="claude", input="x")
    assert err.value.body["code"] == "unsupported_route"
    assert "chat/completions" in err.value.body["message"]
    assert fake.seen() == []


# -- the provider's own I/O wrapper


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def provider(session, url: str, api_key: str | None = PROVIDER_KEY, **extra) -> AnthropicProvider:
    config = ProviderConfig(kind="anthropic", base_url=url, api_key=api_key, **extra)
    return AnthropicProvider("claude", config, session)


def call(route: str = "chat/completions", **body) -> Call:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return Call(route, MODEL, payload, Deadlines(time.monotonic() + 5, 1.0, None))


async def test_complete_returns_usage_and_config_headers(session, fake):
    p = provider(session, fake.url + "/", headers={"anthropic-beta": "some-beta-2025"})
    reply = await p.complete(call())
    assert reply.status == 200 and reply.content_type == "application/json"
    assert reply.usage == Usage(1, 16) and reply.response_model == MODEL and reply.finish_reasons == ("stop",)
    (seen,) = fake.seen("/v1/messages")
    assert seen["headers"]["anthropic-beta"] == "some-beta-2025"


@pytest.mark.parametrize(
    "changes,status,retryable,retry_after,code",
    [({"rate_limited_ratio": 1.0}, 429, True, 1.0, "rate_limit_exceeded"),
     ({"error_ratio": 1.0}, 529, True, None, "overloaded")],
)
async def test_faults_are_classified(session, fake, changes, status, retryable, retry_after, code):
    fake.behave(**changes)
    for opened in (provider(session, fake.url).complete, provider(session, fake.url).stream):
        with pytest.raises(AttemptFailed) as err:
            await opened(call(stream=True))
        failure = err.value
        assert (failure.upstream_status, failure.retryable, failure.retry_after) == (status, retryable, retry_after)
        assert failure.upstream_content_type == "application/json"
        assert orjson.loads(failure.upstream_body)["error"]["code"] == code
        assert not failure.counts_against_circuit if status == 429 else failure.counts_against_circuit


async def test_a_missing_key_is_permanent(session, fake):
    with pytest.raises(AttemptFailed) as err:
        await provider(session, fake.url, api_key=None).complete(call())
    assert (err.value.upstream_status, err.value.retryable) == (401, False)
    assert orjson.loads(err.value.upstream_body)["error"]["type"] == "authentication_error"


async def test_a_stream_is_whole_events_and_always_metered(session, fake):
    stream = await provider(session, fake.url).stream(call(stream=True))
    events = [ev async for ev in stream]
    await stream.aclose()
    assert all(ev.startswith(b"data: ") and ev.endswith(b"\n\n") for ev in events)
    assert events[-1] == b"data: [DONE]\n\n"
    assert not any(b'"choices":[]' in ev for ev in events)  # not asked for: metered, not sent
    assert stream.stats.usage == Usage(1, 16) and stream.stats.done and stream.stats.finish_reasons == ["stop"]


# -- message batches


def item(custom_id: str, **body) -> BatchItem:
    return BatchItem(custom_id, "chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body})


async def poll_until_ended(p: AnthropicProvider, batch_id: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        poll = await p.poll_batch(batch_id)
        if poll.state is not BatchState.IN_PROGRESS or time.monotonic() > deadline:
            return poll
        await asyncio.sleep(0.05)


async def test_a_batch_runs_and_maps_back_by_custom_id(session, fake):
    p = provider(session, fake.url)
    batch_id = await p.submit_batch(MODEL, [item("job_a", stream=True), item("job_b", max_tokens=0),
                                            item("job_c", tools=[WEATHER], tool_choice="required")])
    first = await p.poll_batch(batch_id)
    assert first.state is BatchState.IN_PROGRESS and first.results == [] and first.counts["processing"] == 3
    poll = await poll_until_ended(p, batch_id)
    assert poll.state is BatchState.COMPLETED
    assert poll.counts == {"total": 3, "completed": 2, "failed": 1, "cancelled": 0, "expired": 0, "processing": 0}
    results = {r.custom_id: r for r in poll.results}
    assert set(results) == {"job_a", "job_b", "job_c"}
    a = results["job_a"]
    assert a.status_code == 200 and a.error is None and a.usage == Usage(1, 16)
    body = orjson.loads(a.body)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == WORDS
    b = results["job_b"]
    assert b.status_code == 400 and b.error["type"] == "invalid_request_error" and "max_tokens" in b.error["message"]
    c = orjson.loads(results["job_c"].body)["choices"][0]
    assert c["finish_reason"] == "tool_calls" and c["message"]["tool_calls"][0]["function"]["name"] == "get_weather"

    (created,) = fake.seen("/v1/messages/batches")
    assert created["headers"]["x-api-key"] == PROVIDER_KEY
    assert [r["custom_id"] for r in created["body"]["requests"]] == ["job_a", "job_b", "job_c"]
    assert "stream" not in created["body"]["requests"][0]["params"]
    assert created["body"]["requests"][0]["params"]["max_tokens"] == 4096
    fetched = fake.seen(f"/v1/messages/batches/{batch_id}/results")
    assert len(fetched) == 1 and fetched[0]["headers"]["x-api-key"] == PROVIDER_KEY


async def test_an_expired_batch(session, fake):
    fake.control(batch_expired_ratio=1.0)
    p = provider(session, fake.url)
    poll = await poll_until_ended(p, await p.submit_batch(MODEL, [item("j1"), item("j2")]))
    assert poll.state is BatchState.EXPIRED and poll.counts["expired"] == 2
    assert {(r.custom_id, r.status_code, r.body, r.error["code"]) for r in poll.results} == {
        ("j1", None, None, "expired"), ("j2", None, None, "expired")}


async def test_a_cancelled_batch(session, fake):
    fake.behave(batch_latency_ms=60_000)
    p = provider(session, fake.url)
    batch_id = await p.submit_batch(MODEL, [item("j1")])
    cancel = fake.http.post(f"/v1/messages/batches/{batch_id}/cancel",
                            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert cancel.json()["processing_status"] == "canceling"
    poll = await poll_until_ended(p, batch_id)
    assert poll.state is BatchState.CANCELLED
    assert [(r.custom_id, r.status_code, r.error["code"]) for r in poll.results] == [("j1", None, "cancelled")]


async def test_batch_limits_and_refusals(session, fake):
    p = provider(session, fake.url)
    with pytest.raises(ValueError, match="empty"):
        await p.submit_batch(MODEL, [])
    body = item("j").body
    with pytest.raises(ValueError, match="100000"):
        await p.submit_batch(MODEL, [BatchItem(f"j{i}", "chat/completions", body) for i in range(100_001)])
    with pytest.raises(ValueError, match="only chat/completions"):
        await p.submit_batch(MODEL, [BatchItem("j1", "embeddings", {"model": MODEL, "input": "x"})])
    with pytest.raises(ValueError, match="j2: Anthropic models return a single choice"):
        await p.submit_batch(MODEL, [item("j1"), item("j2", n=3)])
    assert fake.seen() == []
    with pytest.raises(AttemptFailed) as err:  # the API's own validation: a batch-level 400
        await p.submit_batch(MODEL, [item("not a valid id!")])
    assert (err.value.upstream_status, err.value.retryable) == (400, False)
    assert "custom_id" in orjson.loads(err.value.upstream_body)["error"]["message"]
    with pytest.raises(AttemptFailed) as err:
        await p.poll_batch("msgbatch_nope")
    assert (err.value.upstream_status, err.value.retryable) == (404, False)


async def test_results_url_is_followed_only_on_our_own_origin(session, fake):
    p = provider(session, fake.url)
    own = f"{fake.url}/files/elsewhere/results"
    assert p._results_url("b1", own) == own
    documented = f"{fake.url}/v1/messages/batches/b1/results"
    assert p._results_url("b1", "https://attacker.example/v1/messages/batches/b1/results") == documented
    assert p._results_url("b1", None) == documented

