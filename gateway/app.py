"""The gateway object (state built at start-up, closed at shutdown) and its ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admission import Limiter, TierShare
from gateway.api import request_ids
from gateway.auth import Authenticator
from gateway.config import ClientConfig, Config
from gateway.controller import ModeController
from gateway.global_cap import GlobalCap
from gateway.quota import ClientLimits
from gateway.cost import Pricing, cost_usd
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.observability import loop_lag
from gateway.observability.logging import AccessLog, uses_json
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracing
from gateway.providers.base import Provider, Usage
from gateway.redaction import Redactor
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.simulator import SimulatorProvider
from gateway import redaction
from gateway.queue import redis_server
from gateway.queue import webhook
from gateway.queue.batcher import Batcher
from gateway.queue.client_batches import ClientBatches
from gateway.queue.drainer import Drainer
from gateway.queue.job import Job, Via
from gateway.queue.envelope import Envelope
from gateway.queue.keys import Keys
from gateway.queue.notifier import Notifier
from gateway.queue.poller import Poller
from gateway.queue.store import Outcome as JobOutcome
from gateway.queue.store import QueueStore
from gateway.router import Router, Target
from gateway.severity import Mode
from gateway.tasks import TaskSet

log = logging.getLogger("gateway")

# A degraded provider still drains, slower, so the drain keeps probing its health.
DRAIN_SCALE = {Mode.NORMAL: 1.0, Mode.DEGRADED: 0.5, Mode.SHED: 0.25}


def error_response(
    error: GatewayError, headers: dict[str, str] | None = None, redactor: Redactor | None = None
) -> Response:
    """The OpenAI-shaped error answer; with a redactor, no secret survives in it (upstream bodies included)."""
    h = error.response_headers()
    if headers:
        h.update(headers)
    body = error.render()
    if redactor is not None:
        body = redactor.bytes(body)
    return Response(body, status_code=error.status, headers=h, media_type="application/json")


class Gateway:
    """Everything one gateway process holds: config, providers, limiters, router, Redis, metrics."""

    def __init__(
        self,
        config: Config,
        *,
        run_worker: bool = True,
        redis_url: str | None = None,
        private_redis: redis_server.PrivateRedis | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.run_worker = run_worker
        self.metrics = Metrics()
        self.redactor = redaction.from_config(config)
        self.tracing = tracing if tracing is not None else Tracing.from_env()
        self.metrics.prime(config)
        self.auth = Authenticator(config)
        self.access = AccessLog(config.server.access_log, uses_json(config.server.log_format), self.redactor)
        self.tasks = TaskSet()
        shares = {name: TierShare(t.priority, t.reserved_concurrency) for name, t in config.tiers.items()}
        self.limiters = {name: Limiter(p.max_concurrency, shares) for name, p in config.providers.items()}
        self.top_priority = config.top_priority
        self.model_names = sorted(config.models)
        self.providers: dict[str, Provider] = {}
        self.router: Router | None = None
        self.redis: aioredis.Redis | None = None
        self._resolved = redis_url is not None
        self.redis_url = redis_url or config.redis.url
        self._private_redis = private_redis
        self._session: aiohttp.ClientSession | None = None
        self.keys = Keys(config.queue.namespace)
        self.tier_order = sorted(config.tiers, key=lambda n: (config.tiers[n].priority, n))
        self._clients = {c.name: c for c in config.auth.clients}
        self.store: QueueStore | None = None
        self.notifier: Notifier | None = None
        self.envelope: Envelope | None = None
        self.drainer: Drainer | None = None
        self.batcher: Batcher | None = None
        self.poller: Poller | None = None
        self.controller: ModeController | None = None
        self.client_limits: ClientLimits | None = None
        self.batches: ClientBatches | None = None  # the client-facing Batch API (files and batches)
        # Called once per job when it first reaches a terminal state (client batches listen here).
        self.job_hooks: list[Callable[[Job, JobOutcome], Awaitable[None]]] = []
        self._ready_cache = (0.0, False)
        self.started_at = time.time()
        self.draining = False
        for name, tier in config.tiers.items():
            self.metrics.inflight_child(name).set(0)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # admission bounds concurrency per provider; the pool must not add a second, hidden limit
            limit_per_host=0,
            keepalive_timeout=30,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",), raise_for_status=False
        )
        for name, p in self.config.providers.items():
            if p.kind == "openai":
                self.providers[name] = OpenAIProvider(name, p, self._session)
            elif p.kind == "simulator":
                self.providers[name] = SimulatorProvider(name, p.simulator)
            elif p.kind == "anthropic":
                self.providers[name] = AnthropicProvider(name, p, self._session)
            else:
                raise NotImplementedError(f"provider kind {p.kind!r} is not available yet")
        self.router = Router(
            self.config,
            self.providers,
            self.limiters,
            observers=[self.metrics.upstream],
            on_fallback=self._on_fallback,
            on_circuit=self.metrics.circuit,
            tracing=self.tracing,
        )
        if not self._resolved:
            self.redis_url, self._private_redis = await redis_server.resolve(
                self.config.redis.url, self.config.redis.private, Path(self.config.redis.private_dir)
            )
        self.redis = aioredis.Redis.from_url(
            self.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=15,
            # After a Redis restart every pooled connection is stale and fails once; retry on a fresh one.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2), retry_on_error=[RedisConnectionError],
        )
        if not await self.redis_ready():
            log.warning("Redis at %s does not answer; deferral is unavailable until it does", _safe_url(self.redis_url))
        consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store = QueueStore(self.redis, self.keys, self.tier_order, self.config.queue.result_ttl_s, consumer)
        self.notifier = Notifier(self.redis, self.keys)
        self.batches = ClientBatches(self)
        self.batches.start()
        self.envelope = Envelope(
            self.redis, self.keys, {n: (p.rpm, p.tpm) for n, p in self.config.providers.items()}
        )
        self.client_limits = ClientLimits(
            self.redis, self.keys, {c.name: c.limits for c in self.config.auth.clients if c.limits is not None}
        )
        for name, p in self.config.providers.items():
            if p.global_max_concurrency:
                self.router.caps[name] = GlobalCap(self.redis, self.keys.global_cap(name), p.global_max_concurrency)
        self.controller = ModeController(self.config, self.redis, self.keys, self.metrics, self.tracing)
        self.router.observers.append(self.controller.observe)
        self.tasks.start("mode-controller", self.controller.run(), daemon=True)
        self.tasks.start("access-log", self.access.run(), daemon=True)
        self.tasks.start("notifier", self.notifier.run(), daemon=True)
        self.tasks.start("queue-gauges", self._queue_gauges(), daemon=True)
        self.tasks.start("loop-lag", loop_lag.sample(self.metrics.loop_lag.observe), daemon=True)
        if self.run_worker:
            self.batcher = Batcher(self, self.store)
            self.poller = Poller(self, self.store)
            self.tasks.start("batcher", self.batcher.run(), daemon=True)
            self.tasks.start("poller", self.poller.run(), daemon=True)
            self.drainer = Drainer(self, self.store, self.batcher)
            self.tasks.start("drainer", self.drainer.run())
            self.tasks.start("reclaimer", self.drainer.reclaim_loop(), daemon=True)

    async def close(self) -> None:
        self.draining = True
        if self.notifier is not None:
            self.notifier.stopping = True
        if self.controller is not None:
            self.controller.stopping = True
        for loop in (self.batcher, self.poller):
            if loop is not None:
                loop.stopping = True
        if self.drainer is not None:
            self.drainer.stopping = True
            self.drainer._slot_free.set()
        await self.tasks.stop(timeout=self.config.server.shutdown_grace_s)
        for provider in self.providers.values():
            await provider.aclose()
        if self._session is not None:
            await self._session.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self._private_redis is not None:
            self._private_redis.stop()
        self.tracing.shutdown()
        self.access.flush()

    def _on_fallback(self, model: str, source: Target, dest: Target) -> None:
        self.metrics.fallback(model, source.label, dest.label)

    async def redis_ready(self) -> bool:
        """Whether Redis answers; cached for a second so probes cannot hammer it."""
        now = time.monotonic()
        stamp, ok = self._ready_cache
        if now - stamp < 1.0:
            return ok
        ok = False
        if self.redis is not None:
            try:
                ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
            except (RedisError, OSError, asyncio.TimeoutError):
                ok = False
        self._ready_cache = (now, ok)
        return ok

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    def config_client(self, name: str) -> ClientConfig | None:
        return self._clients.get(name)

    def meter(self, model: str, target: Target, usage: Usage | None, batch: bool) -> float:
        """Count tokens and spend for one served request; return the cost in dollars."""
        return self.meter_target(model, target.provider, target.model, usage, batch)

    def meter_target(self, model: str, provider: str, target_model: str, usage: Usage | None, batch: bool) -> float:
        if usage is None:
            return 0.0
        kind = Pricing.BATCH if batch else Pricing.REALTIME
        pricing = self.config.models[model].pricing
        usd = cost_usd(pricing, usage, kind)
        baseline = cost_usd(pricing, usage, Pricing.REALTIME) if batch else usd
        self.metrics.usage(provider, target_model, kind.value, usage.input_tokens, usage.output_tokens, usd, baseline)
        return usd

    async def job_finished(self, job: Job, outcome: JobOutcome) -> None:
        """A job reached its terminal state for the first time: count it, call back, run hooks."""
        self.metrics.jobs.labels(job.tier, (outcome.via or Via.MINIBATCH).value, outcome.status.value).inc()
        if job.callback_url:
            self.tasks.start(f"webhook-{job.id[:12]}", self._callback(job.id))
        for hook in self.job_hooks:
            try:
                await hook(job, outcome)
            except Exception:  # noqa: BLE001 - one hook's failure must not lose the others
                log.exception("job hook failed")

    async def _callback(self, job_id: str) -> None:
        assert self.store is not None
        job = await self.store.get(job_id)
        if job is None or not job.callback_url:
            return
        client = self.config_client(job.client)
        if client is None or not client.webhook_secret:
            return
        record = await webhook.deliver(self.http, job.callback_url, job.to_object(), client.webhook_secret,
                                       client.callback_hosts, self.config.queue.webhook_attempts)
        try:
            await self.store.set_fields(job_id, webhook=orjson.dumps(record))
        except GatewayError:
            log.warning("could not record a webhook outcome: Redis is unavailable")

    def drain_scale(self, provider: str) -> float:
        """How much of its envelope a provider's drain may use now (less while it is degraded)."""
        if self.controller is None:
            return 1.0
        return DRAIN_SCALE[self.controller.provider_mode(provider)]

    async def _queue_gauges(self) -> None:
        """Queue depth and oldest age per tier, refreshed off the request path."""
        assert self.store is not None
        while not self.draining:
            for tier in self.tier_order:
                try:
                    depth, age = await self.store.depth(tier)
                except GatewayError:
                    break
                self.metrics.queue_depth.labels(tier).set(depth)
                self.metrics.queue_oldest_age.labels(tier).set(age)
            with contextlib.suppress(GatewayError):
                self.metrics.dead_letters.set(await self.store.dead_letters())
            await asyncio.sleep(2.0)

    def effective_mode(self, model: str) -> Mode:
        """The mode for a request to ``model``: the most severe of global and first-target provider."""
        if self.controller is None:
            return Mode.NORMAL
        return self.controller.effective(model)


def _safe_url(url: str) -> str:
    """A Redis URL without its password, for logs."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}."))
    return error_response(NotFound(f"No route {request.method} {request.url.path}.", code="unknown_url"))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    gateway = getattr(request.app.state, "gateway", None)
    return error_response(exc, redactor=gateway.redactor if gateway is not None else None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(GatewayError("The gateway failed to handle this request."))


_HANDLERS: dict[Any, Any] = {HTTPException: _not_found, GatewayError: _gateway_error, Exception: _unexpected}


class GatewayApp(Starlette):
    """Starlette, plus a direct path for the proxied POST routes.

    Those handlers answer every error themselves (OpenAI-shaped, with their
    request id), so they skip the middleware stack and the route table: a
    measurable share of each proxied request's cost. Everything else, and every
    request when CORS is on, goes through Starlette as usual.
    """

    direct: dict[str, Any]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.direct.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except Exception as exc:  # noqa: BLE001 - what the Exception handler does on the Starlette path
                    response = await _unexpected(request, exc)
                    given = request.headers.get("x-request-id")
                    response.headers["X-Request-Id"] = given if request_ids.usable(given) else request_ids.new_id()
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _middleware(gateway: Gateway) -> list[Middleware]:
    from gateway.api.request_ids import RequestIds

    middleware = [Middleware(RequestIds)]
    origins = gateway.config.server.cors_origins
    if origins:  # CORS is off unless the operator lists origins
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE", "PUT"],
            allow_headers=["Authorization", "Content-Type", "X-Gateway-Tier", "Prefer", "X-Request-Id",
                           "X-Gateway-Callback-Url"],
            expose_headers=["X-Request-Id", "X-Gateway-Tier", "X-Gateway-Mode", "X-Gateway-Target",
                            "X-Gateway-Attempts", "X-Gateway-Job-Id", "X-Gateway-Deferred", "Location"],
        ))
    return middleware


def _lifespan(gateway: Gateway) -> Any:
    """Start the gateway with the listener and close it after the listener drained."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    return lifespan


def build_app(gateway: Gateway, admin: bool = True) -> Starlette:
    """The API app, which owns the gateway's start and close; ``admin=False`` leaves /admin/* out."""
    from gateway.api import admin as admin_api
    from gateway.api import files_batches, jobs, openai_routes, openapi, probes, ui

    proxied = openai_routes.direct(gateway)
    routes: list[Any] = [*openai_routes.routes(gateway, proxied), *jobs.routes(gateway), *files_batches.routes(gateway),
                         *probes.routes(gateway), *openapi.routes(gateway)]
    if admin:
        routes += [*admin_api.routes(gateway), *ui.routes()]
    app = GatewayApp(routes=routes, lifespan=_lifespan(gateway), middleware=_middleware(gateway),
                     exception_handlers=dict(_HANDLERS))
    app.direct = {} if gateway.config.server.cors_origins else proxied
    app.state.gateway = gateway
    return app


def build_worker_app(gateway: Gateway) -> Starlette:
    """Probes and metrics for ``gateway worker --port``; it owns the worker's start and close."""
    from gateway.api import probes

    app = Starlette(routes=probes.routes(gateway), lifespan=_lifespan(gateway), middleware=_middleware(gateway),
                    exception_handlers=dict(_HANDLERS))
    app.state.gateway = gateway
    return app


def build_admin_app(gateway: Gateway) -> Starlette:
    """The admin API alone, for ``server.admin_port``; it shares the API app's gateway."""
    from gateway.api import admin as admin_api
    from gateway.api import probes, ui

    app = Starlette(routes=[*admin_api.routes(gateway), *ui.routes(), *probes.routes(gateway)],
                    middleware=_middleware(gateway), exception_handlers=dict(_HANDLERS))
    app.state.gateway = gateway
    return app


__all__ = ["Gateway", "build_admin_app", "build_app", "error_response", "Route"]
