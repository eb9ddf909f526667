"""Provider kind ``anthropic``: Claude models over the Messages API, presented as OpenAI chat.completions.

The I/O wrapper around ``anthropic_translate``: it sends translated requests
with aiohttp (the session is passed in), converts aiohttp's exceptions and
Anthropic's error answers to ``AttemptFailed``, and serves message batches for
the provider-batch path. Only ``chat/completions`` has an Anthropic equivalent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.config import ProviderConfig
from gateway.errors import AttemptFailed, GatewayError, InvalidRequest, is_retryable_status
from gateway.providers import anthropic_translate as tr
from gateway.providers import sse
from gateway.providers.base import (
    BatchItem, BatchPoll, BatchState, Call, Reply, StreamStats, call_timeout, retry_after_seconds, transport_failure,
)

ROUTE = "chat/completions"
BATCH_TIMEOUT_S = 120.0  # batch calls are off the hot path; results files can be large


def _rejected(error: GatewayError) -> AttemptFailed:
    """A request that cannot be translated fails like an upstream 400: permanent, with an OpenAI body."""
    return AttemptFailed(error.message, retryable=False, upstream_status=error.status,
                         upstream_body=error.render(), upstream_content_type="application/json")


def _unsupported(provider: str, route: str) -> AttemptFailed:
    error = InvalidRequest(
        f"Provider {provider!r} is of kind anthropic and serves only chat/completions, not {route}.",
        code="unsupported_route",
    )
    return _rejected(error)


async def _status_failure(resp: aiohttp.ClientResponse, what: str = "") -> AttemptFailed:
    try:
        body = await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        body = b""
    return AttemptFailed(
        f"Upstream answered {resp.status}{what}.",
        retryable=is_retryable_status(resp.status),  # 429, 5xx and 529 overloaded_error
        upstream_status=resp.status,
        retry_after=retry_after_seconds(resp.headers),
        upstream_body=tr.openai_error(resp.status, body[:65536]),
        upstream_content_type="application/json",
    )


class AnthropicProvider:
    kind = "anthropic"

    def __init__(self, name: str, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        assert config.base_url
        base = config.base_url.rstrip("/")
        # The documented base is the bare host; accept ".../v1" too rather than call ".../v1/v1/messages".
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self._session = session
        self._headers = {"content-type": "application/json", "anthropic-version": tr.API_VERSION, **config.headers}
        if config.api_key:
            self._headers["x-api-key"] = config.api_key

    def _request(self, call: Call) -> bytes:
        if call.route != ROUTE:
            raise _unsupported(self.name, call.route)
        try:
            return orjson.dumps(tr.messages_request(call.body, call.model))
        except GatewayError as error:
            raise _rejected(error) from None

    async def complete(self, call: Call) -> Reply:
        payload = self._request(call)
        timeout = call_timeout(call)
        try:
            async with self._session.post(
                f"{self.base_url}/v1/messages", data=payload, headers=self._headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise await _status_failure(resp)
                body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "total") from None
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AttemptFailed("Upstream answered 200 with a body that is not JSON.", retryable=True) from None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise AttemptFailed("Upstream answered 200 with something other than a message.", retryable=True)
        completion = tr.chat_completion(message, int(time.time()))
        reason = completion["choices"][0]["finish_reason"]
        return Reply(200, orjson.dumps(completion), "application/json", tr.usage_of(completion),
                     completion.get("model"), (reason,))

    async def stream(self, call: Call) -> AnthropicStream:
        payload = self._request(call)
        timeout = call_timeout(call)
        try:
            resp = await self._session.post(
                f"{self.base_url}/v1/messages", data=payload, headers=self._headers, timeout=timeout
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
        options = call.body.get("stream_options")
        asked = isinstance(options, dict) and bool(options.get("include_usage"))
        # The usage chunk is always built, for metering; it reaches the client only when asked for.
        return AnthropicStream(resp, tr.StreamTranslator(call.model, int(time.time())), call.strip_usage or not asked)

    # -- message batches (off the hot path)

    async def _call(self, method: str, url: str, data: bytes | None = None) -> bytes:
        headers = self._headers if data is not None else {k: v for k, v in self._headers.items() if k != "content-type"}
        try:
            async with self._session.request(method, url, data=data, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=BATCH_TIMEOUT_S)) as resp:
                if resp.status >= 300:
                    raise await _status_failure(resp, f" to {method} {urlsplit(url).path}")
                return await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "batch") from None

    async def submit_batch(self, model: str, items: list[BatchItem]) -> str:
        """One message batch of ``items``; ValueError when they break Anthropic's limits (the caller splits)."""
        if not items:
            raise ValueError("an empty batch")
        if len(items) > tr.BATCH_MAX_REQUESTS:
            raise ValueError(f"a message batch holds at most {tr.BATCH_MAX_REQUESTS} requests, not {len(items)}")
        requests = []
        for item in items:
            if item.route != ROUTE:
                raise ValueError(f"item {item.custom_id}: an anthropic provider serves only {ROUTE}, not {item.route}")
            try:
                requests.append(tr.batch_request(item.custom_id, item.body, model))
            except GatewayError as error:
                raise ValueError(f"item {item.custom_id}: {error.message}") from None
        payload = orjson.dumps({"requests": requests})
        if len(payload) > tr.BATCH_MAX_BYTES:
            raise ValueError(f"a message batch is at most {tr.BATCH_MAX_BYTES} bytes, not {len(payload)}")
        raw = await self._call("POST", f"{self.base_url}/v1/messages/batches", payload)
        batch = _json_object(raw)
        if not isinstance(batch.get("id"), str):
            raise AttemptFailed("The created message batch has no id.", retryable=False)
        return batch["id"]

    async def poll_batch(self, batch_id: str) -> BatchPoll:
        batch = _json_object(await self._call("GET", f"{self.base_url}/v1/messages/batches/{batch_id}"))
        state = tr.batch_state(batch)
        poll = BatchPoll(state, counts=tr.batch_counts(batch))
        if state is BatchState.IN_PROGRESS:
            return poll
        content = await self._call("GET", self._results_url(batch_id, batch.get("results_url")))
        try:
            poll.results = tr.batch_results(content, int(time.time()))
        except ValueError:
            raise AttemptFailed(f"The results of message batch {batch_id} are not JSONL.", retryable=True) from None
        return poll

    def _results_url(self, batch_id: str, url: Any) -> str:
        """``results_url`` is absolute; the API key goes only to our own base URL's origin."""
        if isinstance(url, str) and _origin(url) == _origin(self.base_url):
            return url
        # Missing, or on another origin (a proxy in front that did not rewrite it): the documented path.
        return f"{self.base_url}/v1/messages/batches/{batch_id}/results"

    async def aclose(self) -> None:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AttemptFailed("The batch API answered with a body that is not JSON.", retryable=True) from None
    if not isinstance(obj, dict):
        raise AttemptFailed("The batch API answered with JSON that is not an object.", retryable=True)
    return obj


class AnthropicStream:
    """Anthropic's SSE response, translated event by event into OpenAI chunk events ending in ``[DONE]``."""

    def __init__(self, resp: aiohttp.ClientResponse, translator: tr.StreamTranslator, strip_usage: bool) -> None:
        self._resp = resp
        self._translator = translator
        self._strip_usage = strip_usage
        self.stats = StreamStats()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        translator = self._translator
        try:
            async for raw in sse.events(self._resp.content.iter_any()):
                data = tr.event_data(raw)
                if data is None:
                    continue
                for chunk in translator.feed(data):
                    ev = sse.event(orjson.dumps(chunk))
                    if sse.observe(ev, self.stats, self._strip_usage):
                        yield ev
                if translator.done:
                    break
            if not translator.done:
                raise AttemptFailed("The upstream stream ended before message_stop.", retryable=False)
            sse.observe(sse.DONE, self.stats, self._strip_usage)
            yield sse.DONE
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, "stream") from None
        except ValueError as exc:
            raise AttemptFailed(str(exc), retryable=False) from None

    async def aclose(self) -> None:
        self._resp.close()
