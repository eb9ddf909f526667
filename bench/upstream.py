"""A very fast fake OpenAI upstream: a raw asyncio protocol on uvloop.

It answers any POST with one fixed ``chat.completion`` body, or, when the body
asks for ``"stream": true``, with an SSE stream of chunks spaced by a fixed
delay. Every streamed chunk carries ``bench_sent_ns`` (its CLOCK_MONOTONIC send
time), so a client on the same machine can tell how long each chunk took to
reach it. ``GET /healthz`` answers 200; ``GET /stats`` counts the POSTs served
(the tracing scenario uses a second instance as its OTLP sink). HTTP/1.1 keep-alive, Content-Length
request bodies only: enough for wrk, aiohttp and the gateway, and nothing that
would cost time per request.

Run: ``python -m bench.upstream --port P [--first-token-ms 2 --chunk-ms 1 --chunks 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import orjson

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how are you?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
    }
)


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status.encode(), content_type, len(body)
    )
    return head + body


COMPLETION_RESPONSE = _response("200 OK", b"application/json", COMPLETION)
HEALTH_RESPONSE = _response("200 OK", b"application/json", b'{"status":"ok"}')
NOT_FOUND_RESPONSE = _response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
STREAM_END = b"0\r\n\r\n"


def _chunk(delta: dict[str, object], finish: str | None, sent_ns: int) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-upstream",
        "bench_sent_ns": sent_ns,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _usage_event(chunks: int) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-upstream",
        "choices": [],
        "usage": {"prompt_tokens": 21, "completion_tokens": chunks, "total_tokens": 21 + chunks},
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True)
class StreamShape:
    first_token_s: float
    chunk_s: float
    chunks: int


class StreamWriter:
    """Writes one SSE response: a role chunk, ``chunks`` content chunks, the finish chunk, [DONE]."""

    def __init__(
        self, transport: asyncio.Transport, shape: StreamShape, usage: bool, on_end: Callable[[], None]
    ) -> None:
        self.transport = transport
        self.shape = shape
        self.usage = usage
        self.on_end = on_end
        self.step = 0
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.handle = asyncio.get_running_loop().call_later(self.shape.first_token_s, self._send)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _send(self) -> None:
        if self.transport.is_closing():
            return
        step, last = self.step, self.shape.chunks + 1
        now = time.monotonic_ns()
        if step == 0:
            self.transport.write(STREAM_HEAD + _http_chunk(_chunk({"role": "assistant", "content": ""}, None, now)))
        elif step < last:
            self.transport.write(_http_chunk(_chunk({"content": f"w{step} "}, None, now)))
        else:
            tail = _chunk({}, "stop", now)
            if self.usage:
                tail += _usage_event(self.shape.chunks)
            self.transport.write(_http_chunk(tail + b"data: [DONE]\n\n") + STREAM_END)
            self.on_end()
            return
        self.step += 1
        self.handle = asyncio.get_running_loop().call_later(self.shape.chunk_s, self._send)


@dataclass
class Counts:
    posts: int = 0


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, shape: StreamShape, counts: Counts) -> None:
        self.shape = shape
        self.counts = counts
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.stream: StreamWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        # A stream in progress owns the connection until it ends (no pipelining while streaming).
        while self.stream is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _CONTENT_LENGTH.search(self.buf, 0, end + 2)
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < total:
                return
            line_end = self.buf.find(b"\r\n")
            method, path = bytes(self.buf[:line_end]).split(b" ", 2)[:2]
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            self._answer(method, path, body)

    def _answer(self, method: bytes, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        if method == b"GET":
            if path.startswith(b"/stats"):
                self.transport.write(_response("200 OK", b"application/json", orjson.dumps(self.counts.__dict__)))
            else:
                self.transport.write(HEALTH_RESPONSE if path.startswith(b"/healthz") else NOT_FOUND_RESPONSE)
            return
        self.counts.posts += 1
        if _STREAM.search(body):
            usage = _INCLUDE_USAGE.search(body) is not None
            self.stream = StreamWriter(self.transport, self.shape, usage, self._stream_ended)
            self.stream.start()
        else:
            self.transport.write(COMPLETION_RESPONSE)

    def _stream_ended(self) -> None:
        self.stream = None
        if self.buf:
            self.data_received(b"")


async def serve(host: str, port: int, shape: StreamShape) -> None:
    loop = asyncio.get_running_loop()
    counts = Counts()
    server = await loop.create_server(
        lambda: UpstreamProtocol(shape, counts), host, port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fast fake OpenAI upstream for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=2.0)
    parser.add_argument("--chunk-ms", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=16)
    args = parser.parse_args(argv)
    shape = StreamShape(args.first_token_ms / 1000, args.chunk_ms / 1000, args.chunks)
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, shape))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
