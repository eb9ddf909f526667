"""``sse.replay``: a deferred stream request's non-streaming answer, sent back as a complete SSE stream.

Every chunk must validate as the SDK's chunk type, and folding the chunks back
together must give the original answer.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from gateway.providers.sse import replay

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def chat(*choices: dict[str, Any], usage: dict[str, Any] | None = USAGE, **extra: Any) -> dict[str, Any]:
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "p-chat",
              "choices": list(choices), **extra}
    if usage is not None:
        answer["usage"] = usage
    return answer


def message(index: int = 0, finish: str = "stop", **msg: Any) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", **msg}, "finish_reason": finish, "logprobs": None}


TOOL_CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "fetch", "arguments": "{}"}},
]


def events(payload: bytes) -> list[bytes]:
    assert payload.endswith(b"data: [DONE]\n\n"), payload[-40:]
    parts = payload.split(b"\n\n")
    assert parts[-1] == b""
    out = []
    for part in parts[:-1]:
        assert part.startswith(b"data: "), part
        out.append(part[len(b"data: "):])
    assert out[-1] == b"[DONE]"
    return out[:-1]


def fold_chat(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, Any]]:
    """Put the deltas back together per choice, as a client would."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            acc = out.setdefault(choice.index, {"content": None, "tool_calls": [], "finish_reason": None})
            d = choice.delta
            if d.content is not None:
                acc["content"] = (acc["content"] or "") + d.content
            if d.role:
                acc["role"] = d.role
            if d.refusal:
                acc["refusal"] = d.refusal
            for call in d.tool_calls or []:
                acc["tool_calls"].append(call.model_dump(exclude_none=True))
            if choice.finish_reason:
                acc["finish_reason"] = choice.finish_reason
    return out


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (chat(message(content="Hello there")), {0: {"role": "assistant", "content": "Hello there", "finish_reason": "stop"}}),
        (chat(message(content="")), {0: {"role": "assistant", "content": "", "finish_reason": "stop"}}),
        (chat(message(content="Hé — ünïcode ✓", finish="length")),
         {0: {"role": "assistant", "content": "Hé — ünïcode ✓", "finish_reason": "length"}}),
        (chat(message(content=None, tool_calls=TOOL_CALLS, finish="tool_calls")),
         {0: {"role": "assistant", "content": None, "finish_reason": "tool_calls",
              "tool_calls": [{"index": i, **c} for i, c in enumerate(TOOL_CALLS)]}}),
        (chat(message(content=None, refusal="I can't help with that.")),
         {0: {"role": "assistant", "content": None, "refusal": "I can't help with that.", "finish_reason": "stop"}}),
        (chat(message(0, content="a"), message(1, content="b")),
         {0: {"role": "assistant", "content": "a", "finish_reason": "stop"},
          1: {"role": "assistant", "content": "b", "finish_reason": "stop"}}),
    ],
    ids=["text", "empty", "unicode-length", "tool-calls", "refusal", "two-choices"],
)
@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_replay(answer, expected, include_usage):
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e)) for e in events(replay("chat/completions", answer, include_usage))]
    for chunk in chunks:
        assert (chunk.id, chunk.created, chunk.model, chunk.object) == ("chatcmpl-1", 1700000000, "p-chat", "chat.completion.chunk")
    folded = fold_chat(chunks)
    for acc in folded.values():
        if not acc["tool_calls"]:
            del acc["tool_calls"]
    assert folded == expected
    with_choices = [c for c in chunks if c.choices]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump(exclude_none=True) == USAGE
        assert len(with_choices) == len(chunks) - 1
    else:
        assert with_choices == chunks  # no usage chunk unless asked
        assert all(c.usage is None for c in chunks)


def test_chat_replay_keeps_system_fingerprint():
    answer = chat(message(content="x"), system_fingerprint="fp_123")
    chunks = [orjson.loads(e) for e in events(replay("chat/completions", answer, False))]
    assert {c["system_fingerprint"] for c in chunks} == {"fp_123"}


def test_usage_requested_but_upstream_gave_none():
    chunks = [orjson.loads(e) for e in events(replay("chat/completions", chat(message(content="x"), usage=None), True))]
    assert all(c["choices"] for c in chunks)


def test_chat_replay_without_choices_is_still_a_valid_stream():
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e))
              for e in events(replay("chat/completions", chat(), True))]
    assert [c.choices for c in chunks] == [[]]
    assert chunks[0].usage is not None


@pytest.mark.parametrize("include_usage", [False, True])
def test_completions_replay(include_usage):
    answer = {"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "p-instruct",
              "choices": [{"index": 0, "text": "Once upon", "finish_reason": "length", "logprobs": None}],
              "usage": USAGE}
    chunks = [orjson.loads(e) for e in events(replay("completions", answer, include_usage))]
    # The SDK builds stream chunks of ``completions`` without validation (finish_reason is null until the end).
    assert all(c["object"] == "text_completion" and c["id"] == "cmpl-1" for c in chunks)
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == "Once upon"
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]] == ["length"]
    assert ("usage" in chunks[-1]) is include_usage
    if include_usage:
        assert chunks[-1]["choices"] == []
        Completion.model_validate(chunks[-1])
