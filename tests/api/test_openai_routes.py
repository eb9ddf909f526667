"""The OpenAI surface through the official SDK against a live gateway and a fake upstream.

One gateway serves the whole module. Tests that script failures use their own
model (``fallback_models``), so each has its own circuit and upstream script.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config, fallback_models
from tests.support.net import free_port
from tests.support.sdk import assert_openai_error, metric, sdk
from tests.support.upstream import Behaviour, FakeUpstream

MAX_BODY = 64 * 1024
SECRET_PROMPT = "tell nobody: purple-walrus-4711"

FAULT_MODELS = (
    "fb500", "fb429", "fb429ms", "fb429long", "retry", "hang", "hangstream", "hangheaders", "stall", "cut",
    "circ", "perm", "perm-text", "down", "downhang", "abandon",
)


def api_config(upstream: FakeUpstream, redis_url: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["server"] = {"log_format": "json", "max_body_bytes": MAX_BODY}
    config["models"].update(fallback_models(*FAULT_MODELS))
    # A provider nothing listens for: every call to it is a refused connection.
    config["providers"]["nowhere"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                                      "api_key": "sk-upstream-nowhere"}
    config["models"]["refused"] = {"targets": [{"provider": "nowhere", "model": "n-refused"},
                                               {"provider": "secondary", "model": "s-refused"}]}
    # A tier with short limits, so hangs are detected in well under a second.
    config["tiers"]["snappy"] = {"priority": 0, "timeout_s": 2.0, "first_byte_timeout_s": 0.5, "retries": 1,
                                 "admission_timeout_s": 0.2}
    config["auth"]["clients"][0]["tiers"].append("snappy")
    return config


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(api_config(upstream_server, redis_server.url))


def client(gw, key: str = CLIENT_KEY, **kwargs) -> openai.OpenAI:
    return sdk(gw, key, **kwargs)


def post(gw, path: str, *, key: str | None = CLIENT_KEY, json: Any = None, content: Any = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if content is not None and "content-type" not in {k.lower() for k in h}:
        h["Content-Type"] = "application/json"
    return httpx.post(gw.url + path, json=json, content=content, headers=h, timeout=20.0)


def assert_still_serving(gw) -> None:
    reply = client(gw).chat.completions.create(model="chat", messages=[{"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content


def hello() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hello"}]


# -- the happy paths, through the SDK


def test_chat_completion_replaces_model_and_keeps_unknown_fields(gateway, upstream):
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"service_tier": "flex", "my_vendor_field": {"a": 1}},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 5
    seen = upstream.calls()[-1]
    assert seen.model == "p-chat"
    assert seen.body["service_tier"] == "flex" and seen.body["my_vendor_field"] == {"a": 1}
    assert seen.headers["authorization"] == "Bearer sk-upstream-primary"
    assert CLIENT_KEY not in str(seen.headers)
    assert raw.headers["x-gateway-target"] == "primary/p-chat"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-gateway-tier"] == "interactive"
    assert raw.headers["x-request-id"]


def test_tools_and_response_format_pass_through(gateway, upstream):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    client(gateway).chat.completions.create(
        model="chat", messages=hello(), tools=tools, response_format={"type": "json_object"}, temperature=0.25,
    )
    body = upstream.calls("p-chat")[-1].body
    assert body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.25
    assert body["messages"] == hello()


def test_stream_with_usage_keeps_every_chunk_and_the_usage(gateway, upstream):
    with client(gateway).chat.completions.with_streaming_response.create(
        model="chat", messages=hello(), stream=True, stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-target"] == "primary/p-chat"
        assert response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 "
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 5)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert upstream.calls("p-chat")[-1].body["stream_options"] == {"include_usage": True}


def test_stream_without_usage_hides_the_usage_the_gateway_asked_for(gateway, upstream):
    raw = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "chat", "messages": hello(), "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20.0,
    )
    assert raw.status_code == 200
    events = [e for e in raw.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert len(chunks) == 7  # role, five words, finish: the usage chunk is gone
    # (``"usage": null`` on ordinary chunks is how OpenAI streams look when usage is on; harmless to clients)
    assert all(c["choices"] and not c.get("usage") for c in chunks), chunks
    # The upstream was asked for usage (for metering) even though the client was not given it.
    assert upstream.calls("p-chat")[-1].body["stream_options"] == {"include_usage": True}

    chunks = list(client(gateway).chat.completions.create(model="chat", messages=hello(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 w2 w3 w4 "
    assert all(c.usage is None and c.choices for c in chunks)


def test_stream_usage_is_metered_even_when_hidden(gateway, upstream):
    before = metric(gateway, "gateway_tokens_total", provider="primary", model="p-chat", direction="output",
                    pricing="realtime")
    list(client(gateway).chat.completions.create(model="chat", messages=hello(), stream=True))
    # The metrics are updated when the stream ends, which may be just after the client saw [DONE].
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = metric(gateway, "gateway_tokens_total", provider="primary", model="p-chat", direction="output",
                       pricing="realtime")
        if after == before + 5:
            break
        time.sleep(0.05)
    assert after == before + 5


def test_completions(gateway, upstream):
    raw = client(gateway).completions.with_raw_response.create(model="chat", prompt="Say hi", max_tokens=5)
    completion = raw.parse()
    assert completion.choices[0].text == "word word word word word"
    assert completion.usage.total_tokens == 12
    seen = upstream.calls("p-chat")[-1]
    assert seen.path == "/v1/completions"
    assert seen.body["prompt"] == "Say hi" and seen.body["max_tokens"] == 5
    assert raw.headers["x-gateway-target"] == "primary/p-chat"


@pytest.mark.parametrize("encoding", [None, "float"], ids=["sdk-default-base64", "float"])
def test_embeddings(gateway, upstream, encoding):
    kwargs = {"encoding_format": encoding} if encoding else {}
    result = client(gateway).embeddings.create(model="embed", input=["one", "two"], **kwargs)
    assert [d.embedding for d in result.data] == [[0.5, -0.25, 0.125], [0.5, -0.25, 0.125]]
    assert result.usage.prompt_tokens == 7
    seen = upstream.calls("p-embed")[-1]
    assert seen.path == "/v1/embeddings"
    assert seen.body["encoding_format"] == (encoding or "base64")


def test_models_list_and_retrieve(gateway, upstream):
    c = client(gateway)
    ids = [m.id for m in c.models.list()]
    assert ids == sorted(["chat", "embed", "refused", *FAULT_MODELS])
    assert c.models.retrieve("chat").id == "chat"
    with pytest.raises(openai.NotFoundError) as err:
        c.models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-wrong").models.list()
    assert upstream.calls() == []


# -- staged fallback


def test_fallback_on_500_after_retrying_the_primary(gateway, upstream):
    upstream.default("p-fb500", Behaviour(status=500))
    before = metric(gateway, "gateway_fallbacks_total", model="fb500", from_target="primary/p-fb500",
                    to_target="secondary/s-fb500")
    raw = client(gateway).chat.completions.with_raw_response.create(model="fb500", messages=hello())
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-target"] == "secondary/s-fb500"
    assert raw.headers["x-gateway-attempts"] == "3"  # one retry on the primary (tier retries: 1), then the secondary
    assert len(upstream.calls("p-fb500")) == 2
    assert len(upstream.calls("s-fb500")) == 1
    assert upstream.calls("s-fb500")[0].headers["authorization"] == "Bearer sk-upstream-secondary"
    after = metric(gateway, "gateway_fallbacks_total", model="fb500", from_target="primary/p-fb500",
                   to_target="secondary/s-fb500")
    assert after == before + 1
    assert metric(gateway, "gateway_upstream_requests_total", provider="primary", model="p-fb500",
                  status_class="5xx") >= 2


def test_a_retry_on_the_same_target_can_succeed(gateway, upstream):
    upstream.script("p-retry", Behaviour(status=503))
    raw = client(gateway).chat.completions.with_raw_response.create(model="retry", messages=hello())
    assert raw.headers["x-gateway-target"] == "primary/p-retry"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(upstream.calls("p-retry")) == 2
    assert upstream.calls("s-retry") == []


@pytest.mark.parametrize(
    "model,headers",
    [("fb429", {"retry-after": "0.4"}), ("fb429ms", {"retry-after-ms": "400"})],
    ids=["retry-after", "retry-after-ms"],
)
def test_fallback_on_429_honours_retry_after(gateway, upstream, model, headers):
    upstream.default(f"p-{model}", Behaviour(status=429, headers=headers))
    raw = client(gateway).chat.completions.with_raw_response.create(model=model, messages=hello())
    assert raw.headers["x-gateway-target"] == f"secondary/s-{model}"
    assert raw.headers["x-gateway-attempts"] == "3"
    first, second = upstream.calls(f"p-{model}")
    # The retry waited at least as long as the upstream asked (a lower bound, not a speed claim).
    assert second.at - first.at >= 0.4
    assert len(upstream.calls(f"s-{model}")) == 1


def test_retry_after_beyond_the_deadline_moves_to_the_next_target_at_once(gateway, upstream):
    upstream.default("p-fb429long", Behaviour(status=429, headers={"retry-after": "60"}))
    raw = client(gateway).chat.completions.with_raw_response.create(model="fb429long", messages=hello())
    assert raw.headers["x-gateway-target"] == "secondary/s-fb429long"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(upstream.calls("p-fb429long")) == 1


def test_fallback_when_the_primary_refuses_connections(gateway, upstream):
    raw = client(gateway).chat.completions.with_raw_response.create(model="refused", messages=hello())
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-target"] == "secondary/s-refused"
    assert raw.headers["x-gateway-attempts"] == "3"
    assert metric(gateway, "gateway_upstream_requests_total", provider="nowhere", model="n-refused",
                  status_class="error") == 2
    assert metric(gateway, "gateway_fallbacks_total", model="refused", from_target="nowhere/n-refused",
                  to_target="secondary/s-refused") == 1


def test_fallback_when_the_primary_hangs(gateway, upstream):
    upstream.default("p-hang", Behaviour(delay_s=30))
    started = time.monotonic()
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="hang", messages=hello(), extra_headers={"X-Gateway-Tier": "snappy"}
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-target"] == "secondary/s-hang"
    assert int(raw.headers["x-gateway-attempts"]) >= 2
    assert len(upstream.calls("s-hang")) == 1
    assert metric(gateway, "gateway_fallbacks_total", model="hang", from_target="primary/p-hang",
                  to_target="secondary/s-hang") == 1
    # Served within the tier's total timeout (2 s) plus generous slack for a loaded machine.
    assert time.monotonic() - started < 2.0 + 3.0


@pytest.mark.parametrize(
    "model,behaviour",
    [("hangstream", Behaviour(stall_after_events=0)), ("hangheaders", Behaviour(delay_s=30))],
    ids=["no-first-event", "no-response-headers"],
)
def test_stream_falls_back_when_the_first_token_does_not_come(gateway, upstream, model, behaviour):
    upstream.default(f"p-{model}", behaviour)
    with client(gateway).chat.completions.with_streaming_response.create(
        model=model, messages=hello(), stream=True, extra_headers={"X-Gateway-Tier": "snappy"}
    ) as response:
        assert response.headers["x-gateway-target"] == f"secondary/s-{model}"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 w2 w3 w4 "
    assert len(upstream.calls(f"p-{model}")) >= 1
    assert metric(gateway, "gateway_upstream_requests_total", provider="primary", model=f"p-{model}",
                  status_class="timeout") >= 1


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event_and_is_not_retried(gateway, upstream):
    upstream.default("p-cut", Behaviour(cut_after_events=3))
    seen: list[str] = []
    stream = client(gateway).chat.completions.create(model="cut", messages=hello(), stream=True)
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert seen == ["", "w0 ", "w1 "]
    assert err.value.body["type"] == "upstream_error"
    assert len(upstream.calls("p-cut")) == 1
    assert upstream.calls("s-cut") == []
    assert_still_serving(gateway)


def test_a_stream_stalled_mid_way_ends_within_the_tier_timeout(gateway, upstream):
    upstream.default("p-stall", Behaviour(stall_after_events=2))
    started = time.monotonic()
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json={"model": "stall", "messages": hello(), "stream": True},
                   headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Gateway-Tier": "snappy"}, timeout=20.0)
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert len(events) == 3 and '"error"' in events[-1], events
    assert "[DONE]" not in r.text
    assert elapsed < 2.0 + 3.0  # never held longer than timeout_s (2 s), with slack for a loaded machine
    assert upstream.calls("s-stall") == []


def test_a_client_leaving_mid_stream_frees_its_slot(gateway, upstream):
    upstream.default("p-abandon", Behaviour(event_delay_s=0.5, output_tokens=10))
    with client(gateway).chat.completions.with_streaming_response.create(
        model="abandon", messages=hello(), stream=True
    ) as response:
        first = next(iter(response.parse()))
        assert first.choices[0].delta.role == "assistant"
        assert metric(gateway, "gateway_inflight", tier="interactive") == 1
    # The client closed the connection: the gateway notices and gives the slot back.
    deadline = time.monotonic() + 8
    while metric(gateway, "gateway_inflight", tier="interactive") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(gateway, "gateway_inflight", tier="interactive") == 0
    assert metric(gateway, "gateway_requests_total", tier="interactive", model="abandon", route="chat.completions",
                  outcome="cancelled") == 1
    assert_still_serving(gateway)


# -- the circuit breaker


def test_circuit_opens_after_repeated_failures_and_a_probe_closes_it(gateway, upstream):
    upstream.default("p-circ", Behaviour(status=500))
    c = client(gateway)
    # threshold 3: two failed tries in the first request, the third in the second
    for _ in range(2):
        raw = c.chat.completions.with_raw_response.create(model="circ", messages=hello())
        assert raw.headers["x-gateway-target"] == "secondary/s-circ"
    assert len(upstream.calls("p-circ")) == 3
    assert metric(gateway, "gateway_circuit_open", provider="primary") == 1

    # Open: the primary is skipped without a call.
    raw = c.chat.completions.with_raw_response.create(model="circ", messages=hello())
    assert raw.headers["x-gateway-target"] == "secondary/s-circ"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert len(upstream.calls("p-circ")) == 3

    # After the cooldown (1 s) the primary has recovered: one probe goes through and closes the circuit.
    upstream.default("p-circ", Behaviour())
    time.sleep(1.2)
    raw = c.chat.completions.with_raw_response.create(model="circ", messages=hello())
    assert raw.headers["x-gateway-target"] == "primary/p-circ"
    assert len(upstream.calls("p-circ")) == 4
    raw = c.chat.completions.with_raw_response.create(model="circ", messages=hello())
    assert raw.headers["x-gateway-target"] == "primary/p-circ"
    assert metric(gateway, "gateway_circuit_open", provider="primary") == 0


# -- errors


def test_every_target_failing_is_a_502(gateway, upstream):
    upstream.default("p-down", Behaviour(status=500))
    upstream.default("s-down", Behaviour(status=502))
    r = post(gateway, "/v1/chat/completions", json={"model": "down", "messages": hello()})
    assert_openai_error(r, 502, type_="upstream_error")
    assert r.headers["x-gateway-attempts"] == "4"
    assert r.headers["x-request-id"]
    assert "x-should-retry" not in r.headers  # a transient failure: the client may retry
    assert len(upstream.calls("p-down")) == 2 and len(upstream.calls("s-down")) == 2
    assert_still_serving(gateway)


def test_every_target_hanging_is_a_504_within_the_tier_timeout(gateway, upstream):
    upstream.default("p-downhang", Behaviour(delay_s=30))
    upstream.default("s-downhang", Behaviour(delay_s=30))
    started = time.monotonic()
    r = post(gateway, "/v1/chat/completions", json={"model": "downhang", "messages": hello()},
             headers={"X-Gateway-Tier": "snappy"})
    assert_openai_error(r, 504, code="upstream_timeout")
    assert time.monotonic() - started < 2.0 + 3.0
    assert_still_serving(gateway)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_permanent_upstream_errors_are_passed_through_and_not_retried(gateway, upstream, status):
    upstream_error = {"error": {"message": f"upstream says {status}", "type": "invalid_request_error",
                                "param": "messages", "code": "bad_thing"}}
    upstream.default("p-perm", Behaviour(status=status, body=orjson.dumps(upstream_error)))
    r = post(gateway, "/v1/chat/completions", json={"model": "perm", "messages": hello()})
    assert r.status_code == status
    assert r.json() == upstream_error
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["x-request-id"]
    assert r.headers["x-gateway-attempts"] == "1"
    assert len(upstream.calls("p-perm")) == 1
    assert upstream.calls("s-perm") == []
    assert_still_serving(gateway)


def test_a_permanent_upstream_error_without_json_becomes_openai_shaped(gateway, upstream):
    upstream.default("p-perm-text", Behaviour(status=404, body=b"<html>not here</html>", content_type="text/html"))
    r = post(gateway, "/v1/chat/completions", json={"model": "perm-text", "messages": hello()})
    assert_openai_error(r, 404)
    assert r.headers["x-should-retry"] == "false"


BAD_INPUTS = [
    # (id, kwargs for post(), status, type, code)
    ("invalid-json", {"content": b'{"model": "chat", "messages": ['}, 400, "invalid_request_error", "invalid_json"),
    ("empty-body", {"content": b""}, 400, "invalid_request_error", "invalid_json"),
    ("json-array", {"json": [1, 2]}, 400, "invalid_request_error", "invalid_json"),
    ("no-model", {"json": {"messages": [{"role": "user", "content": "x"}]}}, 400, "invalid_request_error", None),
    ("no-key", {"key": None, "json": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}}, 401, "authentication_error", None),
    ("unknown-key", {"key": "sk-nobody", "json": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}}, 401, "authentication_error", None),
    ("forbidden-tier", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}, "headers": {"X-Gateway-Tier": "background"}},
     403, "permission_error", None),
    ("unknown-tier", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}, "headers": {"X-Gateway-Tier": "platinum"}},
     400, "invalid_request_error", "unknown_tier"),
    ("unknown-model", {"json": {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}}, 404, "invalid_request_error", "model_not_found"),
    ("too-large", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x" * MAX_BODY}]}},
     413, "invalid_request_error", None),
]


@pytest.mark.parametrize("kwargs,status,type_,code", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_an_openai_shaped_error(gateway, upstream, kwargs, status, type_, code):
    r = post(gateway, "/v1/chat/completions", **kwargs)
    assert_openai_error(r, status, type_=type_, code=code)
    assert r.headers["x-request-id"]
    assert r.headers["x-should-retry"] == "false"
    assert upstream.calls() == []
    assert_still_serving(gateway)


def test_a_body_too_large_without_content_length_is_refused(gateway, upstream):
    def chunks():
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"x" * 1024
        yield b'"}]}'

    r = httpx.post(gateway.url + "/v1/chat/completions", content=chunks(),
                   headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}, timeout=20.0)
    assert_openai_error(r, 413)
    assert upstream.calls() == []
    assert_still_serving(gateway)


def test_the_sdk_raises_its_own_error_classes(gateway, upstream):
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-nobody").chat.completions.create(model="chat", messages=hello())
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway, default_headers={"X-Gateway-Tier": "background"}).chat.completions.create(
            model="chat", messages=hello())
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-17", messages=hello())
    with pytest.raises(openai.PermissionDeniedError):  # the batch client may not use interactive either
        client(gateway, key=BATCH_KEY, default_headers={"X-Gateway-Tier": "interactive"}).chat.completions.create(
            model="chat", messages=hello())


@pytest.mark.parametrize("method,path,status", [("GET", "/v1/nothing-here", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_and_methods_are_openai_shaped(gateway, upstream, method, path, status):
    r = httpx.request(method, gateway.url + path, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10.0)
    assert_openai_error(r, status)
    assert r.headers["x-request-id"]


# -- request ids


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True}),
        ("POST", "/v1/chat/completions", {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/v1/embeddings", {"model": "embed", "input": "x"}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/nope", None),
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/nothing-here", None),
    ],
    ids=["chat", "stream", "error", "embeddings", "models", "model-404", "healthz", "metrics", "no-route"],
)
def test_every_response_carries_a_request_id(gateway, upstream, method, path, body):
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    given = httpx.request(method, gateway.url + path, json=body, timeout=10.0,
                          headers={**auth, "X-Request-Id": "req-from-client-42"})
    assert given.headers["x-request-id"] == "req-from-client-42"
    generated = [httpx.request(method, gateway.url + path, json=body, headers=auth, timeout=10.0) for _ in range(2)]
    ids = [r.headers["x-request-id"] for r in generated]
    assert all(ids) and ids[0] != ids[1]


def test_concurrent_requests_are_each_served(gateway, upstream):
    upstream.default("p-chat", Behaviour(delay_s=0.3))
    results: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            raw = client(gateway).chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": f"n{i}"}])
            results.append(raw.headers["x-gateway-target"])
        except BaseException as exc:  # collected and asserted on in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert len(results) == 6
    assert sorted(s.body["messages"][0]["content"] for s in upstream.calls("p-chat")) == [f"n{i}" for i in range(6)]


# -- secrets stay out of logs (read last: the log then holds the whole module's traffic)


def test_logs_hold_no_keys_and_no_prompts(gateway, upstream):
    c = client(gateway)
    secret = [{"role": "user", "content": SECRET_PROMPT}]
    c.chat.completions.create(model="chat", messages=secret)
    list(c.chat.completions.create(model="chat", messages=secret, stream=True))
    c.embeddings.create(model="embed", input=SECRET_PROMPT)
    upstream.default("p-perm", Behaviour(status=400))
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="perm", messages=secret)
    post(gateway, "/v1/chat/completions", content=b'{"model": "chat", "messages": "' + SECRET_PROMPT.encode())
    r = post(gateway, "/v1/chat/completions", key=None, json={"model": "chat", "messages": secret},
             headers={"Authorization": f"Bearer {SECRET_PROMPT}"})
    assert r.status_code == 401
    time.sleep(0.2)  # let the access lines of the last requests reach the file
    log = gateway.log()
    assert '"logger":"gateway.access"' in log  # the log is there and is written to
    for secret_text in (SECRET_PROMPT, "purple-walrus", "sk-upstream-primary", "sk-upstream-secondary", CLIENT_KEY,
                        BATCH_KEY):
        assert secret_text not in log, secret_text
