"""The OpenAI surface: chat completions, completions, embeddings and models.

One request is: authenticate, read and parse the body once, pick the tier and
the path, then serve it synchronously through the router (or, for deferred
paths, hand it to the queue). Everything a client sees on the way out, errors
included, carries the gateway's headers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.api.body import check_params, estimate_tokens, read_json
from gateway.app import Gateway, error_response
from gateway.errors import (
    AttemptFailed,
    GatewayError,
    InvalidRequest,
    LoadShed,
    ModelNotFound,
    RequestDeferred,
    Saturated,
    ServiceUnavailable,
)
from gateway.observability.metrics import deferral_reason, error_outcome
from gateway.providers import sse
from gateway.providers.base import Usage
from gateway.queue.job import Job, JobStatus, new_job_id
from gateway.queue.webhook import check_callback
from gateway.router import Served, annotate
from gateway.tiers import Path, choose_path, choose_tier, prefers_async

STREAMABLE = frozenset({"chat/completions", "completions"})
# After the tier's deadline, how long a stream may still take to deliver its own terminal error event.
STREAM_WRITE_GRACE_S = 1.0


class DeadlineStream(StreamingResponse):
    """A stream that ends at its deadline even when the client stops reading.

    Writes to a client that reads nothing block once the socket buffers fill, so
    the relay would never notice the tier's timeout. Past the deadline the write
    is abandoned and the relay closed, which releases its slot.
    """

    def __init__(self, content: AsyncIterator[bytes], deadline: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.deadline = deadline

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def request_id(headers: Any) -> str:
    given = headers.get("x-request-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return secrets.token_hex(12)


class Proxy:
    """Serves one OpenAI route for a gateway."""

    def __init__(self, gateway: Gateway, route: str) -> None:
        self.gw = gateway
        self.route = route
        self.metric_route = route.replace("/", ".")

    async def handle(self, request: Request) -> Response:
        tracing = self.gw.tracing
        if not tracing.enabled:
            return await self._handle(request)
        span = tracing.server_span(request.method, request.url.path, request.headers)
        token = tracing.activate(span)
        try:
            return await self._handle(request)
        finally:
            tracing.deactivate(token)

    async def _handle(self, request: Request) -> Response:
        gw = self.gw
        started = time.monotonic()
        headers = request.headers
        rid = request_id(headers)
        out = {"X-Request-Id": rid}
        tier_name = "-"
        model = "-"
        client_name = "-"
        try:
            if gw.draining:
                raise ServiceUnavailable("The gateway is shutting down.", code="shutting_down")
            peer = request.client.host if request.client else None
            client = gw.auth.client(headers.get("authorization"), peer)
            client_name = client.name
            raw, body = await read_json(request, gw.config.server.max_body_bytes, gw.config.server.body_timeout_s)
            model = body.get("model") if isinstance(body.get("model"), str) else "-"
            if model not in gw.router.targets:  # type: ignore[union-attr]
                if model == "-":
                    raise InvalidRequest("The request names no model.", param="model", code="missing_model")
                raise ModelNotFound(f"The model {model!r} does not exist.", param="model")
            check_params(self.route, body)
            tier_name = choose_tier(client, headers.get("x-gateway-tier"), gw.config.tiers)
            limits = gw.client_limits
            if limits is not None and limits.limited(client.name):
                lease = await limits.admit(client.name, estimate_tokens(body), gw.config.tiers[tier_name].timeout_s)
                if lease is not None:
                    # Held until the answer is complete: the stream's end for streams, now for the rest.
                    try:
                        response = await self._dispatch(raw, body, client_name, tier_name, model, started, out,
                                                        headers, lease)
                    except BaseException:
                        gw.router.spawn(lease.release())  # type: ignore[union-attr]
                        raise
                    if not isinstance(response, StreamingResponse):
                        gw.router.spawn(lease.release())  # type: ignore[union-attr]
                    return response
            return await self._dispatch(raw, body, client_name, tier_name, model, started, out, headers, None)
        except GatewayError as error:
            if "X-Gateway-Attempts" not in error.headers:
                out["X-Gateway-Attempts"] = "0"
            response = error_response(error, out, gw.redactor)
            self._finish(tier_name, model, response.status_code, started, out, client_name, None, None,
                         outcome=error_outcome(error))
            return response

    async def _dispatch(
        self,
        raw: bytes,
        body: dict[str, Any],
        client_name: str,
        tier_name: str,
        model: str,
        started: float,
        out: dict[str, str],
        headers: Any,
        lease: Any,
    ) -> Response:
        """Choose the path under the effective mode and serve the request on it."""
        gw = self.gw
        tier = gw.config.tiers[tier_name]
        mode = gw.effective_mode(model)
        out["X-Gateway-Tier"] = tier_name
        out["X-Gateway-Mode"] = mode.value
        path = choose_path(tier, mode, prefers_async(headers.get("prefer")), gw.top_priority)
        if path is Path.SHED:
            raise LoadShed(
                f"Tier {tier_name!r} is shed while the gateway is in {mode.value} mode.", headers={"Retry-After": "30"}
            )
        stream = bool(body.get("stream")) and self.route in STREAMABLE
        if path is not Path.SYNC:
            return await self._defer(raw, body, stream, path, client_name, tier_name, model, started, out, headers)
        try:
            if stream:
                return await self._stream(body, tier_name, model, started, out, client_name, lease)
            return await self._complete(body, tier_name, model, started, out, client_name)
        except Saturated:
            if not tier.deferrable:
                raise
            # No slot in time, but this tier can wait: hand it to the queue instead of refusing it.
            return await self._defer(raw, body, stream, Path.HOLD, client_name, tier_name, model, started, out, headers)

    async def _defer(
        self,
        raw: bytes,
        body: dict[str, Any],
        stream: bool,
        path: Path,
        client: str,
        tier_name: str,
        model: str,
        started: float,
        out: dict[str, str],
        headers: Any,
    ) -> Response:
        """Queue the request; answer 202 (async), or hold the connection up to the tier's ``hold_s``."""
        gw = self.gw
        tier = gw.config.tiers[tier_name]
        store, notifier = gw.store, gw.notifier
        assert store is not None and notifier is not None
        callback = headers.get("x-gateway-callback-url") or ""
        if callback:
            cfg = gw.config_client(client)
            check_callback(callback, cfg.callback_hosts if cfg else ())
        now = time.time()
        job = Job(
            id=new_job_id(), client=client, tier=tier_name, model=model, route=self.route, body=raw,
            created_at=now, deadline=now + tier.max_delay_s, stream=stream, callback_url=callback,
            # With tracing on, the worker links back to this request's span; off, the client's context travels.
            traceparent=gw.tracing.traceparent() if gw.tracing.enabled else headers.get("traceparent") or "",
        )
        await store.enqueue(job, int(tier.max_delay_s) + gw.config.queue.result_ttl_s)
        gw.metrics.deferral(tier_name, deferral_reason(path.value, tier.async_, out.get("X-Gateway-Mode")))
        out["X-Gateway-Job-Id"] = job.id
        out["X-Gateway-Attempts"] = "0"
        if path is Path.ASYNC:
            out["Location"] = f"/v1/jobs/{job.id}"
            self._finish(tier_name, model, 202, started, out, client, None, None)
            return Response(orjson.dumps(job.to_object()), status_code=202, headers=out, media_type="application/json")
        done = await notifier.wait(store, job.id, tier.hold_s) if tier.hold_s > 0 else None
        if done is None or not done.status.terminal:
            raise RequestDeferred(
                f"The request was deferred and is still running; fetch its result from /v1/jobs/{job.id}.",
                # x-should-retry: the work is queued already; an SDK that re-sent the request would queue it twice.
                headers={"Retry-After": str(max(int(tier.hold_s), 1)), "X-Gateway-Job-Id": job.id,
                         "x-should-retry": "false"},
                extra={"job_id": job.id},
            )
        out["X-Gateway-Deferred"] = "true"
        out["X-Gateway-Attempts"] = str(done.attempts)
        if done.target:
            out["X-Gateway-Target"] = done.target
        if done.status is JobStatus.SUCCEEDED and done.response_body:
            self._finish(tier_name, model, 200, started, out, client, None, None)
            if stream:
                options = body.get("stream_options")
                asked = isinstance(options, dict) and bool(options.get("include_usage"))
                payload = sse.replay(self.route, orjson.loads(done.response_body), asked)
                return Response(payload, status_code=200, headers=out, media_type="text/event-stream")
            return Response(done.response_body, status_code=200, headers=out, media_type="application/json")
        status = done.response_status or 502
        self._finish(tier_name, model, status, started, out, client, None, None)
        error = done.error or {"message": f"The deferred job ended {done.status.value}.", "type": "server_error",
                               "param": None, "code": f"job_{done.status.value}"}
        return Response(done.response_body or orjson.dumps({"error": error}), status_code=status, headers=out,
                        media_type="application/json")

    async def _complete(
        self, body: dict[str, Any], tier_name: str, model: str, started: float, out: dict[str, str], client: str
    ) -> Response:
        gw = self.gw
        tier = gw.config.tiers[tier_name]
        inflight = gw.metrics.inflight_child(tier_name)
        inflight.inc()
        try:
            served = await gw.router.serve(  # type: ignore[union-attr]
                model, self.route, body, tier_name, tier, started, stream=False, request_id=out["X-Request-Id"]
            )
        finally:
            inflight.dec()
        served.release()
        reply = served.reply
        assert reply is not None
        out["X-Gateway-Target"] = served.target.label
        out["X-Gateway-Attempts"] = str(served.attempts)
        self._finish(tier_name, model, 200, started, out, client, served, reply.usage)
        return Response(reply.body, status_code=200, headers=out, media_type=reply.content_type)

    async def _stream(
        self, body: dict[str, Any], tier_name: str, model: str, started: float, out: dict[str, str], client: str,
        lease: Any = None,
    ) -> Response:
        gw = self.gw
        tier = gw.config.tiers[tier_name]
        options = body.get("stream_options")
        asked_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if not asked_usage and (options is None or isinstance(options, dict)):
            # Ask upstream for the usage chunk so the stream can be metered; the client will not see it.
            # A copy: if admission defers this request, the hand-off must still see what the client asked.
            body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        inflight = gw.metrics.inflight_child(tier_name)
        inflight.inc()
        try:
            served = await gw.router.serve(  # type: ignore[union-attr]
                model, self.route, body, tier_name, tier, started, stream=True,
                strip_usage=not asked_usage, request_id=out["X-Request-Id"],
            )
        except BaseException:
            inflight.dec()
            raise
        out["X-Gateway-Target"] = served.target.label
        out["X-Gateway-Attempts"] = str(served.attempts)
        out["Cache-Control"] = "no-cache"
        out["X-Accel-Buffering"] = "no"
        server_span = gw.tracing.current() if gw.tracing.enabled else None
        return DeadlineStream(
            self._relay(served, tier_name, model, started, out, client, inflight, server_span, lease),
            started + tier.timeout_s + STREAM_WRITE_GRACE_S,
            status_code=200,
            headers=out,
            media_type="text/event-stream",
        )

    async def _relay(
        self, served: Served, tier_name: str, model: str, started: float, out: dict[str, str], client: str,
        inflight: Any, server_span: Any = None, lease: Any = None,
    ) -> AsyncIterator[bytes]:
        status = 200
        assert served.stream is not None and served.rest is not None
        try:
            yield served.first_event
            async for ev in served.rest:
                yield ev
        except AttemptFailed as failure:
            # Bytes already reached the client: no retry, a terminal error event instead of a hang.
            status = failure.status
            yield sse.event(orjson.dumps(failure.body()))
        except BaseException:
            status = 499  # the client went away (or the server is stopping under us)
            raise
        finally:
            served.release()
            inflight.dec()
            if lease is not None:
                self.gw.router.spawn(lease.release())  # type: ignore[union-attr]
            await served.stream.aclose()
            stats = served.stream.stats
            if served.span is not None:
                annotate(served.span, served.target.model, stats.usage, stats.finish_reasons)
                served.span.end()
            self._finish(tier_name, model, status, started, out, client, served, stats.usage, server_span)

    def _finish(
        self,
        tier: str,
        model: str,
        status: int,
        started: float,
        out: dict[str, str],
        client: str,
        served: Served | None,
        usage: Usage | None,
        span: Any = None,
        outcome: str | None = None,
    ) -> None:
        gw = self.gw
        elapsed = time.monotonic() - started
        gw.metrics.request(tier, model, self.metric_route, status, elapsed, outcome)
        usd = gw.meter(model, served.target, usage, batch=False) if served is not None else 0.0
        if gw.tracing.enabled:
            gw.tracing.end_server(span or gw.tracing.current(), status, tier, out.get("X-Gateway-Mode"),
                                  out.get("X-Gateway-Target"), int(out.get("X-Gateway-Attempts", "0")))
        if gw.access.on:
            gw.access.emit(
                request_id=out.get("X-Request-Id"),
                client=client,
                route=self.route,
                tier=tier,
                mode=out.get("X-Gateway-Mode"),
                model=model,
                target=out.get("X-Gateway-Target"),
                attempts=int(out.get("X-Gateway-Attempts", "0")),
                status=status,
                latency_ms=round(elapsed * 1000, 2),
                input_tokens=usage.input_tokens if usage else None,
                output_tokens=usage.output_tokens if usage else None,
                cost_usd=round(usd, 8),
            )


def models_list(gw: Gateway) -> Any:
    async def endpoint(request: Request) -> Response:
        peer = request.client.host if request.client else None
        gw.auth.client(request.headers.get("authorization"), peer)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gateway"} for name in gw.model_names]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    return endpoint


def model_get(gw: Gateway) -> Any:
    async def endpoint(request: Request) -> Response:
        peer = request.client.host if request.client else None
        gw.auth.client(request.headers.get("authorization"), peer)
        name = request.path_params["model"]
        if name not in gw.config.models:
            raise ModelNotFound(f"The model {name!r} does not exist.", param="model")
        return Response(
            orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "gateway"}),
            media_type="application/json",
        )

    return endpoint


def direct(gw: Gateway) -> dict[str, Any]:
    """The proxied POST routes by path, for the app's direct path (see ``GatewayApp``)."""
    return {"/v1/" + route: Proxy(gw, route).handle for route in ("chat/completions", "completions", "embeddings")}


def routes(gw: Gateway, proxied: dict[str, Any] | None = None) -> list[Route]:
    """Every OpenAI route; ``proxied`` is ``direct(gw)`` when the caller already built it."""
    return [
        *(Route(path, handler, methods=["POST"]) for path, handler in (proxied or direct(gw)).items()),
        Route("/v1/models", models_list(gw), methods=["GET"]),
        Route("/v1/models/{model:path}", model_get(gw), methods=["GET"]),
    ]
