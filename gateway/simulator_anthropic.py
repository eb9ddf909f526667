"""The simulator's Anthropic Messages API: realtime messages (plain and streamed) and message batches.

It answers with the same ``Simulator`` as the OpenAI routes, so latency, faults
(``rate_limited_ratio`` → 429 ``rate_limit_error``, ``error_ratio`` → 529
``overloaded_error``) and output length behave alike on both. It checks what
the real API checks and a translation could get wrong: a key (``x-api-key``,
or the bearer token recent SDKs send) and ``anthropic-version``, unknown fields,
alternating roles, tool results that answer the previous turn's tool uses. When a request offers tools and the
last user message names one (or ``tool_choice`` forces one), the answer is a
``tool_use`` block; a turn of tool results is answered by echoing them.

Batches stay ``in_progress`` for the behaviour's ``batch_latency_ms``, then end
with a ``results_url`` pointing back at this server. ``/_sim/anthropic`` shows
the requests it saw (headers included: tests check which key was sent) and sets
``batch_expired_ratio``, the share of batch requests that end ``expired``.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.providers.simulator import Fault, Simulator

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
})
BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})


def _rfc3339(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": f"req_{secrets.token_hex(12)}"}


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(_error_body(error_type, message)), status, headers=headers, media_type="application/json")


def _json(obj: Any) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json")


def _fault_error(fault: Fault) -> tuple[str, str]:
    return ("rate_limit_error", "Number of requests has exceeded your rate limit.") if fault.status == 429 \
        else ("overloaded_error", "Overloaded")


# -- what the API checks


def invalid(params: Any) -> str | None:
    """Why the Messages API would reject ``params`` with a 400, or None."""
    if not isinstance(params, dict):
        return "body: must be an object"
    for key in params:
        if key not in FIELDS:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(params.get("model"), str):
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required and must be at least 1"
    temperature = params.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
        return "temperature: Input should be less than or equal to 1"
    system = params.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or list"
    tools = params.get("tools") or []
    names = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            return f"tools.{i}: a tool needs name and input_schema"
        names.add(tool["name"])
    choice = params.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice: Input should be an object with type auto, any, tool or none"
        if not tools and choice.get("type") != "none":
            return "tool_choice: may only be specified while providing tools"
        if choice.get("type") == "tool" and choice.get("name") not in names:
            return "tool_choice.name: names no tool"
    return _invalid_messages(params.get("messages"))


def _invalid_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_uses: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1].get("role") == role:
            return "messages: roles must alternate between \"user\" and \"assistant\""
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: must be a non-empty string or list"
        uses, results = set(), set()
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCK_TYPES:
                return f"messages.{i}.content.{j}.type: unknown content block type {kind!r}"
            if kind == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}: text content blocks must be non-empty"
            if kind == "tool_use":
                uses.add(block.get("id"))
            if kind == "tool_result":
                results.add(block.get("tool_use_id"))
        if role == "user" and results - previous_uses:
            return f"messages.{i}: tool_result blocks must answer tool_use blocks of the previous message"
        if role == "user" and previous_uses - results:
            return f"messages.{i - 1}: tool_use ids were found without tool_result blocks immediately after"
        previous_uses = uses if role == "assistant" else set()
    return None


# -- what the fake answers


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return " ".join(parts)


def _sample(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        wanted = schema.get("required") or list(props)
        return {name: _sample(props.get(name) or {}) for name in wanted}
    samples: dict[Any, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}
    return samples.get(kind, "sample")


def _chosen_tool(params: dict[str, Any], last_text: str) -> tuple[dict[str, Any] | None, bool]:
    """(the tool to call, whether the call was forced) for a request's tools and last user text."""
    tools = params.get("tools") or []
    choice = params.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None, False
    if choice.get("type") == "tool":
        return next(t for t in tools if t["name"] == choice["name"]), True
    named = next((t for t in tools if t["name"].lower() in last_text.lower()), None)
    if choice.get("type") == "any":
        return named or tools[0], True
    return named, False


def message(sim: Simulator, params: dict[str, Any]) -> dict[str, Any]:
    """The full answer to valid ``params``."""
    answer = sim.answer("chat/completions", params["model"], params)
    usage = {"input_tokens": answer["usage"]["prompt_tokens"], "output_tokens": answer["usage"]["completion_tokens"],
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    last = params["messages"][-1]
    last_text = _text_of(last.get("content")) if last.get("role") == "user" else ""
    content: list[dict[str, Any]] = []
    stop_reason, stop_sequence = "end_turn", None
    has_results = isinstance(last.get("content"), list) and any(b.get("type") == "tool_result" for b in last["content"])
    tool, forced = (None, False) if has_results else _chosen_tool(params, last_text)
    if has_results:
        content.append({"type": "text", "text": f"The tool said: {last_text}"})
    elif tool is not None:
        if not forced:
            content.append({"type": "text", "text": f"Let me call {tool['name']}."})
        content.append({"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": tool["name"],
                        "input": _sample(tool["input_schema"])})
        stop_reason = "tool_use"
    else:
        text = answer["choices"][0]["message"]["content"]
        for seq in params.get("stop_sequences") or ():
            at = text.find(seq)
            if at >= 0:
                text, stop_reason, stop_sequence = text[:at], "stop_sequence", seq
                break
        else:
            if params["max_tokens"] < sim.behaviour.output_tokens:
                stop_reason = "max_tokens"
        content.append({"type": "text", "text": text})
    return {"id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": params["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_events(msg: dict[str, Any]) -> list[bytes]:
    """The event sequence the Messages API streams for ``msg``."""
    usage = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(msg["content"]):
        if block["type"] == "text":
            events.append(_sse("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}}))
            if index == 0:
                events.append(_sse("ping", {"type": "ping"}))
            words = block["text"].split(" ")
            for k, word in enumerate(words):
                delta = {"type": "text_delta", "text": word if k == 0 else " " + word}
                events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": head}))
            raw = orjson.dumps(block["input"]).decode()
            for piece in ["", *(raw[k:k + 8] for k in range(0, len(raw), 8))]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(_sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]},
                                         "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


# -- message batches


@dataclass
class MessageBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    ready_at: float
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def to_object(self, base_url: str) -> dict[str, Any]:
        ended = self.ended_at is not None
        status = "ended" if ended else "canceling" if self.cancel_initiated_at else "in_progress"
        counts = self.counts if ended else {"processing": len(self.requests), "succeeded": 0, "errored": 0,
                                            "canceled": 0, "expired": 0}
        return {"id": self.id, "type": "message_batch", "processing_status": status, "request_counts": counts,
                "created_at": _rfc3339(self.created_at), "expires_at": _rfc3339(self.created_at + 86400),
                "ended_at": _rfc3339(self.ended_at), "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
                "archived_at": None,
                "results_url": f"{base_url}v1/messages/batches/{self.id}/results" if ended else None}


class FakeAnthropic:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.batches: dict[str, MessageBatch] = {}
        self.seen: deque[dict[str, Any]] = deque(maxlen=256)
        self.submissions = 0
        self.batch_expired_ratio = 0.0
        self._rng = random.Random()

    async def _enter(self, request: Request) -> tuple[Any, Response | None]:
        """Record the request and check its headers; (JSON body or None, an error response or None)."""
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.seen.append({"method": request.method, "path": request.url.path, "headers": dict(request.headers),
                          "body": body if len(raw) < 1 << 20 else "<large>"})
        # Recent SDKs send the key as a bearer token; the gateway's provider sends x-api-key (tests check which).
        if not request.headers.get("x-api-key") and not request.headers.get("authorization", "").startswith("Bearer "):
            return None, _error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return None, _error(400, "invalid_request_error", "anthropic-version: header is required")
        if raw and body is None:
            return None, _error(400, "invalid_request_error", "The request body is not valid JSON.")
        if len(raw) > MAX_BATCH_BYTES:
            return None, _error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        return body, None

    def _advance(self, batch: MessageBatch) -> None:
        """End the batch once it is due (or cancelled), answering every request."""
        if batch.ended_at is not None or (batch.cancel_initiated_at is None and time.time() < batch.ready_at):
            return
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for item in batch.requests:
            result: dict[str, Any]
            problem = invalid(item["params"])
            if batch.cancel_initiated_at is not None:
                result, kind = {"type": "canceled"}, "canceled"
            elif problem is not None:
                result, kind = {"type": "errored", "error": _error_body("invalid_request_error", problem)}, "errored"
            elif self._rng.random() < self.batch_expired_ratio:
                result, kind = {"type": "expired"}, "expired"
            else:
                fault = self.sim.fault(batch=True)
                if fault.status != 200:
                    result, kind = {"type": "errored", "error": _error_body(*_fault_error(fault))}, "errored"
                else:
                    result, kind = {"type": "succeeded", "message": message(self.sim, item["params"])}, "succeeded"
            counts[kind] += 1
            batch.results.append(orjson.dumps({"custom_id": item["custom_id"], "result": result}))
        batch.counts = counts
        batch.ended_at = time.time()

    def routes(self) -> list[Route]:
        async def messages(request: Request) -> Response:
            params, refused = await self._enter(request)
            if refused is not None:
                return refused
            problem = invalid(params)
            if problem is not None:
                return _error(400, "invalid_request_error", problem)
            sim = self.sim
            fault = sim.fault()
            if fault.status != 200:
                await asyncio.sleep(sim.latency_s() / 4)
                headers = {"retry-after": str(math.ceil(fault.retry_after_s))} if fault.retry_after_s else None
                return _error(429 if fault.status == 429 else 529, *_fault_error(fault), headers=headers)
            msg = message(sim, params)
            if not params.get("stream"):
                await asyncio.sleep(sim.latency_s())
                return _json(msg)

            async def gen() -> AsyncIterator[bytes]:
                b = sim.behaviour
                await asyncio.sleep(b.first_token_ms / 1000.0)
                for i, ev in enumerate(stream_events(msg)):
                    if i and b.chunk_interval_ms:
                        await asyncio.sleep(b.chunk_interval_ms / 1000.0)
                    yield ev

            return StreamingResponse(gen(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

        async def create(request: Request) -> Response:
            body, refused = await self._enter(request)
            if refused is not None:
                return refused
            requests = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_BATCH_REQUESTS:
                return _error(400, "invalid_request_error", f"requests: between 1 and {MAX_BATCH_REQUESTS} are required")
            ids = set()
            for i, item in enumerate(requests):
                cid = item.get("custom_id") if isinstance(item, dict) else None
                if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                    return _error(400, "invalid_request_error", f"requests.{i}.custom_id: must match {CUSTOM_ID.pattern}")
                if cid in ids:
                    return _error(400, "invalid_request_error", f"requests.{i}.custom_id: duplicate {cid!r}")
                ids.add(cid)
                if not isinstance(item.get("params"), dict) or item["params"].get("stream"):
                    return _error(400, "invalid_request_error", f"requests.{i}.params: an object without stream")
            self.submissions += 1
            now = time.time()
            batch = MessageBatch(f"msgbatch_{secrets.token_hex(12)}", requests, now,
                                 now + self.sim.behaviour.batch_latency_ms / 1000.0)
            self.batches[batch.id] = batch
            return _json(batch.to_object(str(request.base_url)))

        def found(request: Request) -> MessageBatch | None:
            return self.batches.get(request.path_params["batch_id"])

        async def get(request: Request) -> Response:
            _, refused = await self._enter(request)
            if refused is not None:
                return refused
            batch = found(request)
            if batch is None:
                return _error(404, "not_found_error", "No such message batch.")
            self._advance(batch)
            return _json(batch.to_object(str(request.base_url)))

        async def cancel(request: Request) -> Response:
            _, refused = await self._enter(request)
            if refused is not None:
                return refused
            batch = found(request)
            if batch is None:
                return _error(404, "not_found_error", "No such message batch.")
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = time.time()
            return _json(batch.to_object(str(request.base_url)))

        async def results(request: Request) -> Response:
            _, refused = await self._enter(request)
            if refused is not None:
                return refused
            batch = found(request)
            if batch is None:
                return _error(404, "not_found_error", "No such message batch.")
            self._advance(batch)
            if batch.ended_at is None:
                return _error(400, "invalid_request_error", "The message batch has not ended; results are not ready.")
            return Response(b"".join(line + b"\n" for line in batch.results), media_type="application/binary")

        async def control(request: Request) -> Response:
            if request.method == "PUT":
                try:
                    changes = orjson.loads(await request.body() or b"{}")
                except orjson.JSONDecodeError:
                    return _error(400, "invalid_request_error", "The body is not valid JSON.")
                if "batch_expired_ratio" in changes:
                    self.batch_expired_ratio = float(changes["batch_expired_ratio"])
                if changes.get("clear"):
                    self.seen.clear()
            return _json({"requests": list(self.seen), "submissions": self.submissions, "batches": len(self.batches),
                          "batch_expired_ratio": self.batch_expired_ratio})

        return [
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/batches", create, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}", get, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}/cancel", cancel, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
            Route("/_sim/anthropic", control, methods=["GET", "PUT"]),
        ]


def anthropic_routes(sim: Simulator) -> list[Route]:
    """The fake Anthropic API's routes, sharing ``sim`` with the OpenAI-compatible ones."""
    return FakeAnthropic(sim).routes()
