"""Request bodies: read within limits, parse once, and refuse what no provider should see.

Reading stops with 413 as soon as the body is known to be too large, and with
408 when a client trickles it in slower than ``server.body_timeout_s`` allows
(a slowloris body cannot hold a connection forever). ``check_params`` is the
pure check of the few fields the gateway itself relies on; everything else
passes through untouched for the provider to judge.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request

from gateway.errors import InvalidJSON, InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

MAX_TOKENS_CAP = 10_000_000
MAX_N = 128


def json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (absent counts as JSON: some clients omit it)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def read_json(request: Request, limit: int, timeout_s: float) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its JSON object."""
    if not json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaType("Send the request body as application/json.")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise InvalidRequest("Content-Length is not a number.") from None
        if too_large:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g}s.") from None
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw:
        raise InvalidJSON("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    return raw, body


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_params(route: str, body: dict[str, Any]) -> None:
    """Refuse values the gateway cannot meter or route safely; raise ``InvalidRequest`` naming the field."""
    for name in ("max_tokens", "max_completion_tokens"):
        if name in body and body[name] is not None:
            v = body[name]
            if not _whole(v) or not 1 <= v <= MAX_TOKENS_CAP:
                raise InvalidRequest(f"{name} must be a whole number from 1 to {MAX_TOKENS_CAP}.", param=name,
                                     code="invalid_value")
    if "n" in body and body["n"] is not None:
        if not _whole(body["n"]) or not 1 <= body["n"] <= MAX_N:
            raise InvalidRequest(f"n must be a whole number from 1 to {MAX_N}.", param="n", code="invalid_value")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream must be true or false.", param="stream", code="invalid_type")
    if route == "chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages must be a non-empty array.", param="messages", code="invalid_value")
        if not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("Each message must be an object.", param="messages", code="invalid_type")
    elif route == "completions" and "prompt" not in body:
        raise InvalidRequest("prompt is required.", param="prompt", code="missing_required_parameter")
    elif route == "embeddings" and "input" not in body:
        raise InvalidRequest("input is required.", param="input", code="missing_required_parameter")


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tokens a request may use, for the TPM envelope: prompt characters / 4 plus the output cap."""
    chars = len(orjson.dumps(body.get("messages") or body.get("prompt") or body.get("input") or ""))
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    return chars // 4 + (cap if isinstance(cap, int) else 256)
