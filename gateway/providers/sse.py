"""Server-sent events: splitting a byte stream into whole events, and the usage chunk."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import orjson

from gateway.providers.base import StreamStats, Usage

DONE = b"data: [DONE]\n\n"


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
