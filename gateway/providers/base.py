"""The ``Provider`` protocol and the values that cross it.

A provider turns one ``Call`` into a ``Reply`` (``complete``) or an opened
``Stream`` (``stream``). It raises ``AttemptFailed`` for anything that went
wrong, already classified as retryable or permanent; it never retries itself.
``submit_batch`` and ``poll_batch`` serve provider batch APIs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import aiohttp
import orjson

from gateway.errors import AttemptFailed

ROUTES = ("chat/completions", "completions", "embeddings")


def call_timeout(call: Call) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for one upstream call: what is left of the request's deadline, and the connect limit."""
    remaining = call.deadlines.deadline - time.monotonic()
    if remaining <= 0:
        raise AttemptFailed("The request deadline passed before the upstream call.", retryable=False, timeout=True)
    return aiohttp.ClientTimeout(total=remaining, sock_connect=min(call.deadlines.connect_s, remaining))


def transport_failure(exc: BaseException, what: str) -> AttemptFailed:
    """A timeout or connection error of an HTTP provider, as a retryable failed attempt."""
    if isinstance(exc, asyncio.TimeoutError):
        return AttemptFailed(f"The upstream did not answer in time ({what}).", retryable=True, timeout=True)
    return AttemptFailed(f"Upstream connection failed: {type(exc).__name__}.", retryable=True)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", 0)
        return cls(prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Absolute (monotonic) deadline for the whole request, and per-attempt limits in seconds."""

    deadline: float
    connect_s: float
    first_byte_s: float | None


@dataclass(slots=True)
class Call:
    route: str  # one of ROUTES
    model: str  # the target's model name
    body: dict[str, Any]  # the client's body, model already replaced
    deadlines: Deadlines
    request_id: str = ""
    strip_usage: bool = False  # the gateway asked for stream usage; the client did not


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    usage: Usage | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class StreamStats:
    usage: Usage | None = None
    chunks: int = 0
    done: bool = False
    finish_reasons: list[str] = field(default_factory=list)


class BatchState(str, Enum):
    IN_PROGRESS = "in_progress"  # submitted, validating, running or finalizing upstream
    COMPLETED = "completed"  # ended; results cover every item (each may still have failed)
    FAILED = "failed"  # the batch as a whole failed (e.g. validation); no item ran
    EXPIRED = "expired"  # the window ran out; results cover what finished
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a provider batch; ``custom_id`` is the job id."""

    custom_id: str
    route: str
    body: dict[str, Any]  # OpenAI-shaped request body with the target's model


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One item's outcome, always in OpenAI shape (providers translate)."""

    custom_id: str
    status_code: int | None  # the item's HTTP status; None when it never ran
    body: bytes | None  # the OpenAI-shaped response body on success, or the provider's error body
    error: dict[str, Any] | None = None  # {"message", "type", "code"} when the item failed
    usage: Usage | None = None


@dataclass(slots=True)
class BatchPoll:
    state: BatchState
    results: list[BatchResult] = field(default_factory=list)  # filled once the batch ended
    error: str | None = None  # why the batch as a whole failed
    counts: dict[str, int] = field(default_factory=dict)


class Stream(Protocol):
    """An opened SSE stream. Iterating yields whole events (``data: ...\\n\\n``) as they arrive."""

    stats: StreamStats

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    name: str
    kind: str

    async def complete(self, call: Call) -> Reply: ...

    async def stream(self, call: Call) -> Stream: ...

    async def submit_batch(self, model: str, items: list[BatchItem]) -> str:
        """Submit one upstream batch for ``model``; return the provider's batch id."""
        ...

    async def poll_batch(self, batch_id: str) -> BatchPoll:
        """The batch's state; once it has ended, every item's result."""
        ...

    async def aclose(self) -> None: ...


def retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` in seconds; HTTP dates are ignored."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            return None
    return None


def batch_results(content: bytes) -> list[BatchResult]:
    """Lines of an OpenAI batch output or error file, as results."""
    out = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        line = orjson.loads(raw)
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        error = line.get("error")
        if error is None and status is not None and status != 200 and isinstance(body, dict):
            error = body.get("error")
        usage = Usage.from_openai(body.get("usage")) if isinstance(body, dict) and status == 200 else None
        out.append(BatchResult(str(line.get("custom_id")), status, orjson.dumps(body) if body is not None else None,
                               error, usage))
    return out


def finish_reasons(answer: dict[str, Any]) -> tuple[str, ...]:
    """The finish reason of each choice of an OpenAI-shaped answer."""
    choices = answer.get("choices")
    if not isinstance(choices, list):
        return ()
    return tuple(str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason"))
