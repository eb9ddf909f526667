"""A scriptable fake OpenAI-compatible upstream, served by uvicorn in a thread on a free port.

Behaviour is chosen per upstream model name (the target's ``model``): tests queue
``Behaviour`` entries with ``script`` or set a standing ``default``. The server
records every request it saw, and the peak concurrency per model, so tests can
assert on what reached the provider (and what did not).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tests.support.net import free_port, wait_http


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0  # before the response starts
    body: bytes | None = None  # raw body instead of a generated answer
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall_after_events: int | None = None  # streams: stop sending (but keep the connection) after N events
    cut_after_events: int | None = None  # streams: end the body without [DONE] after N events
    event_delay_s: float = 0.0  # streams: pause between events
    output_tokens: int = 5
    gate: threading.Event | None = None  # hold the response until the test sets it
    reset: bool = False  # drop the connection with a TCP RST instead of answering


@dataclass
class Seen:
    path: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class FakeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.scripts: dict[str, deque[Behaviour]] = defaultdict(deque)
        self.defaults: dict[str, Behaviour] = {}
        self.seen: list[Seen] = []
        self.active: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control, from the test thread

    def script(self, model: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self.scripts[model].extend(behaviours)

    def default(self, model: str, behaviour: Behaviour) -> None:
        with self._lock:
            self.defaults[model] = behaviour

    def calls(self, model: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if model is None or s.model == model]

    def reset(self) -> None:
        with self._lock:
            self.scripts.clear()
            self.defaults.clear()
            self.seen.clear()
            self.peak.clear()

    def start(self) -> FakeUpstream:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, loop="asyncio", http="h11",
                                lifespan="off", access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-upstream", daemon=True)
        self._thread.start()
        wait_http(self.url + "/health")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(10)

    # -- the ASGI app, on the server thread

    def _next(self, model: str) -> Behaviour:
        with self._lock:
            queue = self.scripts.get(model)
            if queue:
                return queue.popleft()
            return self.defaults.get(model, Behaviour())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/health":
            await _send(send, 200, b'{"ok":true}')
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            await _send(send, 400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
            return
        model = body.get("model", "")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        behaviour = self._next(model)
        with self._lock:
            self.seen.append(Seen(path, model, body, headers, time.monotonic()))
            self.active[model] += 1
            self.peak[model] = max(self.peak[model], self.active[model])
        try:
            await self._respond(send, path, model, body, behaviour)
        finally:
            with self._lock:
                self.active[model] -= 1

    async def _respond(self, send: Any, path: str, model: str, body: dict[str, Any], b: Behaviour) -> None:
        while b.gate is not None and not b.gate.is_set():
            await asyncio.sleep(0.01)
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.reset:
            _reset(send)
            return
        if b.status != 200 or b.body is not None:
            payload = b.body if b.body is not None else orjson.dumps(
                {"error": {"message": f"fake {b.status}", "type": "server_error", "param": None, "code": None}}
            )
            await _send(send, b.status, payload, b.content_type or "application/json", b.headers)
            return
        if body.get("stream"):
            await self._stream(send, model, body, b)
            return
        await _send(send, 200, orjson.dumps(answer(path, model, body, b.output_tokens)), "application/json", b.headers)

    async def _stream(self, send: Any, model: str, body: dict[str, Any], b: Behaviour) -> None:
        headers = [(b"content-type", b"text/event-stream")] + [(k.encode(), v.encode()) for k, v in b.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        events = stream_events(model, body, b.output_tokens)
        for i, ev in enumerate(events):
            if b.stall_after_events is not None and i >= b.stall_after_events:
                await asyncio.sleep(3600)
            if b.cut_after_events is not None and i >= b.cut_after_events:
                break
            if i and b.event_delay_s:
                await asyncio.sleep(b.event_delay_s)
            await send({"type": "http.response.body", "body": ev, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _reset(send: Any) -> None:
    """Abort the connection under uvicorn's h11 cycle: SO_LINGER 0 turns the close into a TCP RST."""
    transport = send.__self__.transport  # ``send`` is the bound method of uvicorn's RequestResponseCycle
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _send(send: Any, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def answer(path: str, model: str, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    prompt_tokens = 7
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, _ in enumerate(items):
            vec = [0.5, -0.25, 0.125]
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack("<3f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens, "total_tokens": prompt_tokens + output_tokens}
    text = " ".join(["word"] * output_tokens)
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}], "usage": usage}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
            "usage": usage}


def stream_events(model: str, body: dict[str, Any], output_tokens: int) -> list[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}
    chunks = [{**base, **extra, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for i in range(output_tokens):
        chunks.append({**base, **extra, "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]})
    chunks.append({**base, **extra, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": output_tokens, "total_tokens": 7 + output_tokens}})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
