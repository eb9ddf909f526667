"""Provider kind ``openai`` against the fake upstream: requests sent, answers and failures classified."""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest

from gateway.config import ProviderConfig
from gateway.errors import AttemptFailed
from gateway.providers.base import Call, Deadlines, Usage
from gateway.providers.openai import OpenAIProvider
from tests.support.net import free_port
from tests.support.upstream import Behaviour


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def provider(session, base_url: str, **extra) -> OpenAIProvider:
    config = ProviderConfig(kind="openai", base_url=base_url, api_key="sk-provider-secret",
                            headers={"OpenAI-Organization": "org-1"}, **extra)
    return OpenAIProvider("primary", config, session)


def call(model: str, route: str = "chat/completions", timeout: float = 5.0, **body) -> Call:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return Call(route, model, payload, Deadlines(time.monotonic() + timeout, 1.0, None))


async def test_complete_sends_the_body_and_provider_credentials(session, upstream):
    reply = await provider(session, upstream.base_url + "/").complete(call("m1", tools=[{"type": "function"}]))
    assert reply.status == 200
    assert reply.usage == Usage(7, 5)
    assert reply.response_model == "m1"
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"] == "word word word word word"
    seen = upstream.calls("m1")[0]
    assert seen.path == "/v1/chat/completions"  # a trailing slash on base_url does not double up
    assert seen.body["tools"] == [{"type": "function"}]
    assert seen.headers["authorization"] == "Bearer sk-provider-secret"
    assert seen.headers["openai-organization"] == "org-1"
    assert seen.headers["content-type"] == "application/json"


@pytest.mark.parametrize("route", ["completions", "embeddings"])
async def test_other_routes(session, upstream, route):
    reply = await provider(session, upstream.base_url).complete(call("m2", route=route, input="x", prompt="x"))
    assert reply.status == 200
    assert upstream.calls("m2")[0].path == f"/v1/{route}"


@pytest.mark.parametrize(
    "behaviour,retryable,status,retry_after",
    [
        (Behaviour(status=500), True, 500, None),
        (Behaviour(status=503, headers={"retry-after": "2"}), True, 503, 2.0),
        (Behaviour(status=429, headers={"retry-after-ms": "250"}), True, 429, 0.25),
        (Behaviour(status=429, headers={"retry-after-ms": "250", "retry-after": "9"}), True, 429, 0.25),
        (Behaviour(status=529), True, 529, None),
        (Behaviour(status=408), True, 408, None),
        (Behaviour(status=400), False, 400, None),
        (Behaviour(status=401), False, 401, None),
        (Behaviour(status=403), False, 403, None),
        (Behaviour(status=404), False, 404, None),
        (Behaviour(status=422), False, 422, None),
    ],
)
async def test_error_statuses_are_classified(session, upstream, behaviour, retryable, status, retry_after):
    upstream.script("m3", behaviour)
    with pytest.raises(AttemptFailed) as err:
        await provider(session, upstream.base_url).complete(call("m3"))
    failure = err.value
    assert (failure.retryable, failure.upstream_status, failure.retry_after, failure.timeout) == (
        retryable, status, retry_after, False)
    assert orjson.loads(failure.upstream_body)["error"]["message"] == f"fake {status}"
    assert failure.upstream_content_type.startswith("application/json")
    assert "sk-provider-secret" not in failure.message


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(body=b"<html>gateway of the gateway</html>", content_type="text/html"),
        Behaviour(body=b"{not json", content_type="application/json"),
        Behaviour(body=b"[1, 2]", content_type="application/json"),
    ],
    ids=["html", "broken-json", "json-array"],
)
async def test_a_200_that_is_not_an_openai_answer_is_a_retryable_failure(session, upstream, behaviour):
    upstream.script("m4", behaviour)
    with pytest.raises(AttemptFailed) as err:
        await provider(session, upstream.base_url).complete(call("m4"))
    assert err.value.retryable and err.value.upstream_status is None


async def test_a_refused_connection_is_retryable_without_a_status(session):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(AttemptFailed) as err:
        await provider(session, dead).complete(call("m5"))
    assert err.value.retryable and err.value.upstream_status is None and not err.value.timeout
    assert err.value.counts_against_circuit


async def test_the_total_deadline_bounds_a_hung_upstream(session, upstream):
    upstream.script("m6", Behaviour(delay_s=5))
    started = time.monotonic()
    with pytest.raises(AttemptFailed) as err:
        await provider(session, upstream.base_url).complete(call("m6", timeout=0.3))
    assert err.value.timeout and err.value.retryable and err.value.status == 504
    assert time.monotonic() - started < 3.0  # bounded by the 0.3 s deadline, with slack for a loaded machine


async def test_a_passed_deadline_is_not_sent(session, upstream):
    with pytest.raises(AttemptFailed) as err:
        await provider(session, upstream.base_url).complete(call("m7", timeout=-1))
    assert err.value.timeout
    assert upstream.calls("m7") == []


async def collect(stream) -> list[bytes]:
    events = []
    try:
        async for ev in stream:
            events.append(ev)
    finally:
        await stream.aclose()
    return events


@pytest.mark.parametrize("strip_usage", [False, True])
async def test_stream_yields_whole_events_and_meters_usage(session, upstream, strip_usage):
    c = call("s1", stream=True, stream_options={"include_usage": True})
    c.strip_usage = strip_usage
    stream = await provider(session, upstream.base_url).stream(c)
    events = await collect(stream)
    assert all(ev.startswith(b"data: ") and ev.endswith(b"\n\n") for ev in events)
    assert events[-1] == b"data: [DONE]\n\n"
    usage_events = [ev for ev in events if b'"choices":[]' in ev]
    assert len(usage_events) == (0 if strip_usage else 1)
    assert len(events) == (8 if strip_usage else 9)
    assert stream.stats.usage == Usage(7, 5) and stream.stats.done


async def test_a_stream_cut_before_done_fails_without_retry(session, upstream):
    upstream.script("s2", Behaviour(cut_after_events=2))
    stream = await provider(session, upstream.base_url).stream(call("s2", stream=True))
    seen: list[bytes] = []
    with pytest.raises(AttemptFailed) as err:
        async for ev in stream:
            seen.append(ev)
    await stream.aclose()
    assert len(seen) == 2
    assert not err.value.retryable


@pytest.mark.parametrize(
    "behaviour,retryable",
    [(Behaviour(status=429), True), (Behaviour(status=400), False),
     (Behaviour(body=b'{"ok": true}', content_type="application/json"), True)],
    ids=["429", "400", "json-instead-of-sse"],
)
async def test_a_stream_that_does_not_open_fails_before_any_event(session, upstream, behaviour, retryable):
    upstream.script("s3", behaviour)
    with pytest.raises(AttemptFailed) as err:
        await provider(session, upstream.base_url).stream(call("s3", stream=True))
    assert err.value.retryable is retryable
