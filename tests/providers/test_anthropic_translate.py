"""OpenAI chat.completions <-> Anthropic Messages translation: table tests, both directions, and streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import AttemptFailed, InvalidRequest
from gateway.providers import anthropic_translate as tr
from gateway.providers.base import BatchState, Usage

USER = {"role": "user", "content": "hi"}


def req(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [USER])
    return tr.messages_request({"model": "ignored", **body}, "claude-x")


# -- requests


def test_a_minimal_request_gets_the_target_model_and_a_default_max_tokens():
    assert req() == {"model": "claude-x", "max_tokens": tr.DEFAULT_MAX_TOKENS, "messages": [USER]}


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_completion_tokens": 70}, {"max_tokens": 70}),
        ({"max_completion_tokens": 70, "max_tokens": 50}, {"max_tokens": 70}),
        ({"temperature": 0.3}, {"temperature": 0.3}),
        ({"temperature": 1.7}, {"temperature": 1.0}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"top_k": 5}, {"top_k": 5}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"stop": ["", None]}, {}),
        ({"stop": None}, {}),
        ({"user": "u-42"}, {"metadata": {"user_id": "u-42"}}),
        ({"safety_identifier": "s-1"}, {"metadata": {"user_id": "s-1"}}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"stream": False}, {}),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        # OpenAI-only fields are dropped, not failed on
        ({"logprobs": True, "top_logprobs": 2, "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2,
          "response_format": {"type": "json_object"}, "metadata": {"k": "v"}, "store": True, "service_tier": "flex",
          "logit_bias": {"1": 2}, "n": 1, "parallel_tool_calls": True, "tool_choice": "auto"}, {}),
    ],
)
def test_scalar_fields(body, expected):
    out = req(**body)
    base = {"model": "claude-x", "max_tokens": tr.DEFAULT_MAX_TOKENS, "messages": [USER]}
    assert out == {**base, **expected}


@pytest.mark.parametrize(
    "messages,system,turns",
    [
        ([{"role": "system", "content": "be brief"}, USER], "be brief", [USER]),
        ([{"role": "developer", "content": "dev"}, {"role": "system", "content": [{"type": "text", "text": "sys"}]}, USER],
         [{"type": "text", "text": "dev"}, {"type": "text", "text": "sys"}], [USER]),
        ([{"role": "system", "content": [{"type": "text", "text": "cache me", "cache_control": {"type": "ephemeral"}}]}, USER],
         [{"type": "text", "text": "cache me", "cache_control": {"type": "ephemeral"}}], [USER]),
        # same-role turns merge, since Anthropic wants them alternating
        ([USER, {"role": "user", "content": "again"}], None,
         [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}]),
        # empty content disappears; an assistant turn left empty is dropped
        ([USER, {"role": "assistant", "content": ""}, {"role": "user", "content": "x"}], None,
         [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "x"}]}]),
        # a prefilled last assistant turn loses trailing whitespace
        ([USER, {"role": "assistant", "content": "Sure: "}], None,
         [USER, {"role": "assistant", "content": "Sure:"}]),
        ([{"role": "user", "name": "bob", "content": [{"type": "text", "text": "a"}, "b"]}], None,
         [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
    ],
)
def test_system_and_turns(messages, system, turns):
    out = req(messages=messages)
    assert out.get("system") == system
    assert out["messages"] == turns


@pytest.mark.parametrize(
    "part,block",
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"}},
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}),
        ({"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
         {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}),
        ({"type": "image_url", "image_url": "http://example.com/dog.gif"},
         {"type": "image", "source": {"type": "url", "url": "http://example.com/dog.gif"}}),
        ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
         {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}),
        ({"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}},
         {"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}),
    ],
)
def test_content_parts(part, block):
    out = req(messages=[{"role": "user", "content": [{"type": "text", "text": "look"}, part]}])
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "look"}, block]}]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"messages": "hi"}, "messages"),
        ({"n": 2}, "n"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}]}]},
         "messages[0].content"),
        ({"messages": [USER, {"role": "tool", "content": "r"}]}, "messages[1].tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]},
         "messages[0].tool_calls[0]"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ],
)
def test_untranslatable_requests_are_invalid(body, param):
    with pytest.raises(InvalidRequest) as err:
        req(**body)
    assert err.value.param == param
    assert err.value.status == 400 and not err.value.retryable


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Weather for a city",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize(
    "tools,choice,parallel,expected_tools,expected_choice",
    [
        ([WEATHER], None, None, [ANTHROPIC_WEATHER], None),
        ([WEATHER], "auto", None, [ANTHROPIC_WEATHER], {"type": "auto"}),
        ([WEATHER], "none", None, [ANTHROPIC_WEATHER], {"type": "none"}),
        ([WEATHER], "required", None, [ANTHROPIC_WEATHER], {"type": "any"}),
        ([WEATHER], {"type": "function", "function": {"name": "get_weather"}}, None, [ANTHROPIC_WEATHER],
         {"type": "tool", "name": "get_weather"}),
        ([WEATHER], None, False, [ANTHROPIC_WEATHER], {"type": "auto", "disable_parallel_tool_use": True}),
        ([WEATHER], "required", False, [ANTHROPIC_WEATHER], {"type": "any", "disable_parallel_tool_use": True}),
        ([WEATHER], "none", False, [ANTHROPIC_WEATHER], {"type": "none"}),
        # no parameters: an empty object schema; hosted (non-function) tools are dropped
        ([{"type": "function", "function": {"name": "now"}}, {"type": "web_search_preview"}], None, None,
         [{"name": "now", "input_schema": {"type": "object", "properties": {}}}], None),
        ([{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}, "cache_control": {"type": "ephemeral"}}],
         None, None, [{"name": "f", "input_schema": {"type": "object", "properties": {}}, "cache_control": {"type": "ephemeral"}}],
         None),
        # no tools at all: tool_choice and parallel_tool_calls mean nothing and are dropped
        ([{"type": "web_search_preview"}], "required", False, None, None),
        ([], "auto", None, None, None),
    ],
)
def test_tools_and_tool_choice(tools, choice, parallel, expected_tools, expected_choice):
    body: dict[str, Any] = {"tools": tools}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = req(**body)
    assert out.get("tools") == expected_tools
    assert out.get("tool_choice") == expected_choice


def test_a_tool_round_trip_conversation():
    messages = [
        {"role": "system", "content": "use tools"},
        {"role": "user", "content": "weather in Oslo and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks, summarise"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_3", "content": ""},
    ]
    out = req(messages=messages, tools=[WEATHER])
    assert out["system"] == "use tools"
    assert out["messages"] == [
        {"role": "user", "content": "weather in Oslo and Rome?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
            {"type": "text", "text": "thanks, summarise"},
        ]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_3", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_3"}]},
    ]


def test_the_request_body_is_not_modified():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER], "stop": "s"}
    before = orjson.dumps(body)
    tr.messages_request(body, "claude-x")
    assert orjson.dumps(body) == before


# -- answers


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 4, **usage}}


@pytest.mark.parametrize(
    "stop_reason,finish",
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
     ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
     ("something_new", "stop"), (None, "stop")],
)
def test_stop_reasons(stop_reason, finish):
    out = tr.chat_completion(message([{"type": "text", "text": "x"}], stop_reason), 123)
    assert out["choices"][0]["finish_reason"] == finish


def test_a_text_answer():
    out = tr.chat_completion(message([{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                      {"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}]), 123)
    assert out == {
        "id": "msg_1", "object": "chat.completion", "created": 123, "model": "claude-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 0}},
    }


def test_a_tool_use_answer():
    out = tr.chat_completion(message([
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ], "tool_use"), 1)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


def test_only_tool_use_gives_null_content():
    out = tr.chat_completion(message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use"), 1)
    assert out["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    "usage,expected",
    [
        ({"input_tokens": 10, "output_tokens": 4}, (10, 4, 14, 0)),
        ({"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50},
         (160, 4, 164, 50)),
        ({"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": None}, (3, 1, 4, 0)),
        ({}, (0, 0, 0, 0)),
        (None, (0, 0, 0, 0)),
    ],
)
def test_usage(usage, expected):
    out = tr.openai_usage(usage)
    assert (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"],
            out["prompt_tokens_details"]["cached_tokens"]) == expected


# -- errors


@pytest.mark.parametrize(
    "status,body,type_,code,message",
    [
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: bad"}},
         "invalid_request_error", None, "max_tokens: bad"),
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
         "authentication_error", "invalid_api_key", "invalid x-api-key"),
        (403, {"type": "error", "error": {"type": "permission_error", "message": "no"}}, "permission_error", None, "no"),
        (404, {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}},
         "invalid_request_error", "not_found", "model: x"),
        (413, {"type": "error", "error": {"type": "request_too_large", "message": "big"}},
         "invalid_request_error", "request_too_large", "big"),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
         "rate_limit_error", "rate_limit_exceeded", "slow"),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
         "server_error", "overloaded", "Overloaded"),
        (500, {"type": "error", "error": {"type": "api_error", "message": "oops"}}, "server_error", None, "oops"),
        (400, {"type": "error", "error": {"type": "brand_new_error", "message": "?"}},
         "invalid_request_error", "brand_new_error", "?"),
        (502, "<html>bad gateway</html>", "server_error", None, "Upstream answered 502."),
        (418, None, "invalid_request_error", None, "Upstream answered 418."),
    ],
)
def test_error_bodies_become_openai_shaped(status, body, type_, code, message):
    raw = b"" if body is None else body.encode() if isinstance(body, str) else orjson.dumps(body)
    out = orjson.loads(tr.openai_error(status, raw))
    assert out == {"error": {"message": message, "type": type_, "param": None, "code": code}}


# -- streams


START = {"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-real",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": {"input_tokens": 12, "output_tokens": 1,
                                                        "cache_read_input_tokens": 3}}}


def text_start(i: int) -> dict[str, Any]:
    return {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}


def text_delta(i: int, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}}


def stop(i: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": i}


def tool_start(i: int, ident: str, name: str) -> dict[str, Any]:
    return {"type": "content_block_start", "index": i,
            "content_block": {"type": "tool_use", "id": ident, "name": name, "input": {}}}


def json_delta(i: int, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": text}}


def end(reason: str, output: int) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
             "usage": {"output_tokens": output}}, {"type": "message_stop"}]


def run(evs: list[dict[str, Any]]) -> tuple[tr.StreamTranslator, list[dict[str, Any]]]:
    t = tr.StreamTranslator("claude-x", 99)
    out: list[dict[str, Any]] = []
    for ev in evs:
        out.extend(t.feed(ev))
    return t, out


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]]


def test_a_text_stream():
    t, out = run([START, text_start(0), {"type": "ping"}, text_delta(0, "Hel"), text_delta(0, "lo"), stop(0),
                  *end("end_turn", 7)])
    assert deltas(out) == [({"role": "assistant", "content": ""}, None), ({"content": "Hel"}, None),
                           ({"content": "lo"}, None), ({}, "stop")]
    assert all(c["id"] == "msg_s" and c["model"] == "claude-real" and c["created"] == 99
               and c["object"] == "chat.completion.chunk" for c in out)
    assert out[-1]["choices"] == [] and out[-1]["usage"] == {
        "prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 3}}
    assert t.done and t.finish_reason == "stop"


def test_a_tool_stream_with_text_first_and_two_calls():
    _, out = run([START, text_start(0), text_delta(0, "Checking."), stop(0),
                  tool_start(1, "toolu_a", "get_weather"), json_delta(1, ""), json_delta(1, '{"city":'),
                  json_delta(1, ' "Oslo"}'), stop(1),
                  tool_start(2, "toolu_b", "now"), stop(2), *end("tool_use", 30)])
    assert deltas(out) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Checking."}, None),
        ({"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function",
                          "function": {"name": "get_weather", "arguments": ""}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]}, None),
        ({"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": ""}}]},
         None),
        ({}, "tool_calls"),
    ]


@pytest.mark.parametrize(
    "evs,expected",
    [
        # text inside content_block_start is not lost
        ([START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}, stop(0),
          *end("max_tokens", 1)],
         [({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "length")]),
        # thinking blocks and their deltas are skipped
        ([START, {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
          {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
          {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}, stop(0),
          text_start(1), text_delta(1, "Yes"), stop(1), *end("end_turn", 2)],
         [({"role": "assistant", "content": ""}, None), ({"content": "Yes"}, None), ({}, "stop")]),
        # no content at all still opens with the role
        ([START, *end("refusal", 0)], [({"role": "assistant", "content": ""}, None), ({}, "content_filter")]),
        # unknown event types are ignored
        ([START, {"type": "brand_new_event"}, text_start(0), text_delta(0, "x"), *end("stop_sequence", 1)],
         [({"role": "assistant", "content": ""}, None), ({"content": "x"}, None), ({}, "stop")]),
    ],
)
def test_stream_sequences(evs, expected):
    _, out = run(evs)
    assert deltas(out) == expected


def test_message_delta_usage_is_cumulative_and_may_carry_input():
    t, _ = run([START, text_start(0), {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                       "usage": {"output_tokens": 5, "input_tokens": 20}}])
    assert t.usage["prompt_tokens"] == 23 and t.usage["completion_tokens"] == 5 and not t.done


def test_message_start_yields_nothing_so_an_early_error_can_still_fail_over():
    t = tr.StreamTranslator("m", 1)
    assert t.feed(START) == []
    with pytest.raises(AttemptFailed) as err:
        t.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    failure = err.value
    assert failure.retryable and failure.upstream_status == 529
    assert orjson.loads(failure.upstream_body)["error"]["code"] == "overloaded"


def test_a_thinking_block_opens_the_stream_so_the_first_byte_is_not_held_back():
    t = tr.StreamTranslator("m", 1)
    t.feed(START)
    out = t.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    assert deltas(out) == [({"role": "assistant", "content": ""}, None)]
    assert t.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "h"}}) == []


@pytest.mark.parametrize("error_type,retryable,status", [
    ("overloaded_error", True, 529), ("api_error", True, 500), ("rate_limit_error", True, 429),
    ("invalid_request_error", False, 400), (None, True, 500)])
def test_stream_error_events(error_type, retryable, status):
    with pytest.raises(AttemptFailed) as err:
        run([START, text_start(0), {"type": "error", "error": {"type": error_type, "message": "m"}}])
    assert (err.value.retryable, err.value.upstream_status) == (retryable, status)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b'event: ping\ndata: {"type": "ping"}\n\n', {"type": "ping"}),
        (b'data: {"type":"message_stop"}\n\n', {"type": "message_stop"}),
        (b": a comment\n\n", None),
        (b"event: x\n\n", None),
    ],
)
def test_event_data(raw, expected):
    assert tr.event_data(raw) == expected


@pytest.mark.parametrize("raw", [b"data: {broken\n\n", b"data: [1]\n\n"])
def test_event_data_rejects_non_objects(raw):
    with pytest.raises(ValueError):
        tr.event_data(raw)


# -- batches


def test_batch_request_drops_stream_and_uses_the_model():
    out = tr.batch_request("job_1", {"model": "x", "messages": [USER], "stream": True, "max_tokens": 9}, "claude-x")
    assert out == {"custom_id": "job_1", "params": {"model": "claude-x", "max_tokens": 9, "messages": [USER]}}


def counts(**c: int) -> dict[str, int]:
    return {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **c}


@pytest.mark.parametrize(
    "batch,state",
    [
        ({"processing_status": "in_progress", "request_counts": counts(processing=3)}, BatchState.IN_PROGRESS),
        ({"processing_status": "canceling", "request_counts": counts(processing=3)}, BatchState.IN_PROGRESS),
        ({"processing_status": "ended", "request_counts": counts(succeeded=2, errored=1)}, BatchState.COMPLETED),
        ({"processing_status": "ended", "request_counts": counts(succeeded=2, expired=1)}, BatchState.EXPIRED),
        ({"processing_status": "ended", "request_counts": counts(succeeded=1, canceled=2)}, BatchState.CANCELLED),
        ({"processing_status": "ended", "request_counts": counts(canceled=1, expired=1)}, BatchState.CANCELLED),
        ({"processing_status": "ended"}, BatchState.COMPLETED),
        ({}, BatchState.IN_PROGRESS),
    ],
)
def test_batch_state(batch, state):
    assert tr.batch_state(batch) is state


def test_batch_counts():
    out = tr.batch_counts({"request_counts": counts(succeeded=5, errored=2, canceled=1, expired=1, processing=0)})
    assert out == {"total": 9, "completed": 5, "failed": 2, "cancelled": 1, "expired": 1, "processing": 0}


def test_batch_results():
    lines = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": message([{"type": "text", "text": "ok"}])}},
        {"custom_id": "b", "result": {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": "max_tokens: bad"}}}},
        {"custom_id": "c", "result": {"type": "errored", "error": {"type": "overloaded_error", "message": "busy"}}},
        {"custom_id": "d", "result": {"type": "canceled"}},
        {"custom_id": "e", "result": {"type": "expired"}},
        {"custom_id": "f", "result": {"type": "who_knows"}},
    ]
    content = b"\n".join(orjson.dumps(x) for x in lines) + b"\n\n"
    a, b, c, d, e, f = tr.batch_results(content, 5)
    assert (a.custom_id, a.status_code, a.error, a.usage) == ("a", 200, None, Usage(10, 4))
    assert orjson.loads(a.body)["choices"][0]["message"]["content"] == "ok"
    assert orjson.loads(a.body)["created"] == 5
    assert (b.status_code, b.error["type"], b.error["message"]) == (400, "invalid_request_error", "max_tokens: bad")
    assert orjson.loads(b.body) == {"error": b.error}
    assert (c.status_code, c.error["code"]) == (529, "overloaded")
    assert (d.status_code, d.body, d.error["code"]) == (None, None, "cancelled")
    assert (e.status_code, e.body, e.error["code"]) == (None, None, "expired")
    assert (f.status_code, f.error["code"]) == (None, "unknown_result")


def test_batch_results_reject_a_line_that_is_not_an_object():
    with pytest.raises(ValueError):
        tr.batch_results(b'{"custom_id": "a", "result": {"type": "expired"}}\n[1]\n', 1)
