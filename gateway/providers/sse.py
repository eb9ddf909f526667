"""Server-sent events: splitting a byte stream into whole events, and the usage chunk."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

import orjson

from gateway.providers.base import StreamStats, Usage

DONE = b"data: [DONE]\n\n"
_FINISH = re.compile(rb'"finish_reason":"([a-z_]+)"')


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


async def events(chunks: AsyncIterable[bytes], max_event_bytes: int = 8 * 1024 * 1024) -> AsyncIterator[bytes]:
    """Whole events, each ending in a blank line, as soon as each is complete."""
    buf = b""
    async for chunk in chunks:
        buf = buf + chunk if buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            yield buf[: end + 2]
            buf = buf[end + 2 :]
        if len(buf) > max_event_bytes:
            raise ValueError("an SSE event exceeded the size limit")
    if buf.strip():
        yield buf.rstrip(b"\n") + b"\n\n"


def observe(ev: bytes, stats: StreamStats, strip_usage: bool) -> bool:
    """Record what metering needs from one event; return False when the event must not reach the client.

    Only the final usage chunk (``"choices":[]``) is parsed; other events pass as bytes.
    """
    stats.chunks += 1
    if b'"finish_reason":"' in ev:
        m = _FINISH.search(ev)
        if m:
            stats.finish_reasons.append(m.group(1).decode())
    if ev == DONE:
        stats.done = True
        return True
    if b'"choices":[]' in ev or b'"choices": []' in ev:
        data = ev[ev.find(b"data:") + 5 :].strip()
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if isinstance(obj, dict) and obj.get("usage"):
            stats.usage = Usage.from_openai(obj["usage"])
            return not strip_usage
    return True


def replay(route: str, answer: dict, include_usage: bool) -> bytes:
    """A complete SSE stream equivalent to a non-streaming ``answer``, for deferred stream requests."""
    base = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint") if k in answer}
    # Set up front: an answer without choices still sends a (usage) chunk, and it needs its object type.
    base["object"] = "text_completion" if route == "completions" else "chat.completion.chunk"
    chunks: list[dict] = []
    for choice in answer.get("choices") or []:
        index = choice.get("index", 0)
        if route == "completions":
            base["object"] = "text_completion"
            chunks.append({**base, "choices": [{"index": index, "text": choice.get("text", ""), "finish_reason": None, "logprobs": None}]})
            chunks.append({**base, "choices": [{"index": index, "text": "", "finish_reason": choice.get("finish_reason"), "logprobs": None}]})
            continue
        base["object"] = "chat.completion.chunk"
        message = choice.get("message") or {}
        delta: dict = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and answer.get("usage"):
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return b"".join(event(orjson.dumps(c)) for c in chunks) + DONE
