"""SSE framing: whole events out of arbitrary chunks, and the usage chunk seen (and hidden) in passing."""

from __future__ import annotations

import orjson
import pytest

from gateway.providers import sse
from gateway.providers.base import StreamStats, Usage


async def split(chunks: list[bytes], **kwargs) -> list[bytes]:
    async def source():
        for c in chunks:
            yield c

    return [ev async for ev in sse.events(source(), **kwargs)]


@pytest.mark.parametrize(
    "chunks,expected",
    [
        ([b"data: a\n\n"], [b"data: a\n\n"]),
        ([b"data: a\n\ndata: b\n\n"], [b"data: a\n\n", b"data: b\n\n"]),
        ([b"da", b"ta: a\n", b"\ndata: b", b"\n\n"], [b"data: a\n\n", b"data: b\n\n"]),
        ([b"data: a\r\n\r\n"], [b"data: a\n\n"]),
        ([b"event: x\ndata: a\n\n"], [b"event: x\ndata: a\n\n"]),
        ([b": keep-alive\n\n", b"data: a\n\n"], [b": keep-alive\n\n", b"data: a\n\n"]),
        ([b"data: tail-without-blank-line"], [b"data: tail-without-blank-line\n\n"]),
        ([b"data: a\n\n", b"\n"], [b"data: a\n\n"]),
        ([], []),
    ],
)
async def test_events(chunks, expected):
    assert await split(chunks) == expected


async def test_an_oversized_event_is_refused():
    with pytest.raises(ValueError):
        await split([b"data: " + b"x" * 100], max_event_bytes=50)


USAGE = sse.event(orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}))
CONTENT = sse.event(orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]}))


@pytest.mark.parametrize(
    "ev,strip,shown,usage,done",
    [
        (CONTENT, True, True, None, False),
        (USAGE, False, True, Usage(2, 3), False),
        (USAGE, True, False, Usage(2, 3), False),
        (sse.DONE, True, True, None, True),
        (b'data: {"choices": [], "usage": null}\n\n', True, True, None, False),
        (b'data: {"choices":[] broken\n\n', True, True, None, False),
    ],
)
def test_observe(ev, strip, shown, usage, done):
    stats = StreamStats()
    assert sse.observe(ev, stats, strip) is shown
    assert stats.usage == usage and stats.done is done and stats.chunks == 1


def test_event_framing():
    assert sse.event(b'{"a":1}') == b'data: {"a":1}\n\n'
