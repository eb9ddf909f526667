"""Provider kind ``openai``: any OpenAI-compatible HTTP API, over aiohttp.

aiohttp is the hot-path client because it measured about 10x httpx's default
transport on this machine (DESIGN.md §4). The session is built by the caller and
passed in; this module converts aiohttp's exceptions to ``AttemptFailed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import ProviderConfig
from gateway.errors import AttemptFailed, is_retryable_status
from gateway.providers import sse
from gateway.providers.base import (
    BatchItem, BatchPoll, BatchState, Call, Reply, StreamStats, Usage, batch_results, call_timeout, finish_reasons,
    retry_after_seconds, transport_failure,
)


async def _status_failure(resp: aiohttp.ClientResponse) -> AttemptFailed:
    try:
        body = await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        body = b""
    return AttemptFailed(
        f"Upstream answered {resp.status}.",
        retryable=is_retryable_status(resp.status),
        upstream_status=resp.status,
        retry_after=retry_after_seconds(resp.headers),
        upstream_body=body[:65536],
        upstream_content_type=resp.headers.get("content-type"),
    )


BATCH_MAX_LINES = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024
_BATCH_STATES = {
    "completed": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
}


class OpenAIProvider:
    kind = "openai"

    def __init__(self, name: str, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        assert config.base_url
        self.base_url = config.base_url.rstrip("/")
        self._session = session
        self._headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    async def complete(self, call: Call) -> Reply:
        timeout = call_timeout(call)
        try:
            async with self._session.post(
                f"{self.base_url}/{call.route}", data=orjson.dumps(call.body), headers=self._headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise await _status_failure(resp)
                body = await resp.read()
                ctype = resp.headers.get("content-type", "")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "total") from None
        if not ctype.startswith("application/json"):
            raise AttemptFailed(f"Upstream answered 200 with content type {ctype or 'none'!r}.", retryable=True)
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AttemptFailed("Upstream answered 200 with a body that is not JSON.", retryable=True) from None
        if not isinstance(obj, dict):
            raise AttemptFailed("Upstream answered 200 with a JSON body that is not an object.", retryable=True)
        return Reply(200, body, ctype, Usage.from_openai(obj.get("usage")), obj.get("model"), finish_reasons(obj))

    async def stream(self, call: Call) -> OpenAIStream:
        timeout = call_timeout(call)
        try:
            resp = await self._session.post(
                f"{self.base_url}/{call.route}", data=orjson.dumps(call.body), headers=self._headers, timeout=timeout
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "connect") from None
        if resp.status != 200:
            failure = await _status_failure(resp)
            resp.release()
            raise failure
        ctype = resp.headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            resp.close()
            raise AttemptFailed(f"Upstream answered a stream with content type {ctype or 'none'!r}.", retryable=True)
        return OpenAIStream(resp, call.strip_usage)

    async def _call(self, method: str, path: str, data: Any = None, json_body: bool = False) -> tuple[int, bytes]:
        """One batch-API request (off the hot path); transport errors become ``AttemptFailed``."""
        headers = {k: v for k, v in self._headers.items() if json_body or k != "Content-Type"}
        try:
            async with self._session.request(method, f"{self.base_url}{path}", headers=headers, data=data,
                                             timeout=aiohttp.ClientTimeout(total=120)) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    raise AttemptFailed(
                        f"Upstream answered {resp.status} to {method} {path}.",
                        retryable=is_retryable_status(resp.status), upstream_status=resp.status,
                        retry_after=retry_after_seconds(resp.headers), upstream_body=body[:65536],
                        upstream_content_type=resp.headers.get("content-type"),
                    )
                return resp.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "batch") from None

    async def submit_batch(self, model: str, items: list[BatchItem]) -> str:
        """Upload the items as a JSONL file (purpose ``batch``) and create a 24 h batch over it."""
        if not items:
            raise ValueError("an empty batch")
        if len(items) > BATCH_MAX_LINES:
            raise ValueError(f"a batch holds at most {BATCH_MAX_LINES} lines")
        endpoint = f"/v1/{items[0].route}"
        lines = b"".join(
            orjson.dumps({"custom_id": i.custom_id, "method": "POST", "url": endpoint, "body": i.body}) + b"\n"
            for i in items
        )
        if len(lines) > BATCH_MAX_BYTES:
            raise ValueError(f"a batch file holds at most {BATCH_MAX_BYTES} bytes")
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", lines, filename=f"{model}-batch.jsonl", content_type="application/jsonl")
        _, raw = await self._call("POST", "/files", data=form)
        file_id = orjson.loads(raw)["id"]
        payload = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h",
                   "metadata": {"source": "gateway"}}
        _, raw = await self._call("POST", "/batches", data=orjson.dumps(payload), json_body=True)
        return str(orjson.loads(raw)["id"])

    async def poll_batch(self, batch_id: str) -> BatchPoll:
        _, raw = await self._call("GET", f"/batches/{batch_id}")
        batch = orjson.loads(raw)
        state = _BATCH_STATES.get(batch.get("status", ""), BatchState.IN_PROGRESS)
        poll = BatchPoll(state, counts=batch.get("request_counts") or {})
        if state is BatchState.IN_PROGRESS:
            return poll
        if state is BatchState.FAILED:
            errors = (batch.get("errors") or {}).get("data") or []
            poll.error = "; ".join(str(e.get("message")) for e in errors) or "the batch failed"
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                _, content = await self._call("GET", f"/files/{batch[key]}/content")
                poll.results.extend(batch_results(content))
        return poll

    async def aclose(self) -> None:
        return None


class OpenAIStream:
    """An upstream SSE response, yielding whole events; transport errors become ``AttemptFailed``."""

    def __init__(self, resp: aiohttp.ClientResponse, strip_usage: bool) -> None:
        self._resp = resp
        self._strip_usage = strip_usage
        self.stats = StreamStats()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for ev in sse.events(self._resp.content.iter_any()):
                if sse.observe(ev, self.stats, self._strip_usage):
                    yield ev
            if not self.stats.done:
                raise AttemptFailed("The upstream stream ended before [DONE].", retryable=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "stream") from None
        except ValueError as exc:
            raise AttemptFailed(str(exc), retryable=False) from None

    async def aclose(self) -> None:
        self._resp.close()
