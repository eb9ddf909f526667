"""The admin API: modes (show, override, clear), status, the audit log, and cancelling a queued job.

Every endpoint needs an admin key; with none configured it answers on loopback
only. Secrets never appear in what it returns.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway.app import Gateway
from gateway.auth import Admin
from gateway.errors import GatewayError, InvalidJSON, InvalidRequest, JobConflict, NotFound, QueueUnavailable
from gateway.modes import GLOBAL
from gateway.queue.job import JobStatus
from gateway.severity import Mode


class ModeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode
    provider: str | None = None
    ttl_s: float | None = Field(None, gt=0, le=7 * 86400)
    reason: str = Field(min_length=1, max_length=500)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def routes(gw: Gateway) -> list[Route]:
    def admin(request: Request) -> Admin:
        peer = request.client.host if request.client else None
        return gw.auth.admin(request.headers.get("authorization"), peer)

    def scope_of(provider: str | None) -> str:
        if provider in (None, "", GLOBAL):
            return GLOBAL
        if provider not in gw.config.providers:
            raise NotFound(f"No provider named {provider!r}.", param="provider", code="provider_not_found")
        return provider

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidJSON("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise InvalidJSON("The request body must be a JSON object.")
        return body

    def modes_view() -> dict[str, Any]:
        assert gw.controller is not None
        c = gw.controller
        return {
            "scopes": c.describe(),
            "models": {m: c.effective(m).value for m in gw.config.models},
            "automatic": gw.config.degradation.enabled,
            "shared": c.shared,
        }

    async def get_mode(request: Request) -> Response:
        admin(request)
        return _json(modes_view())

    async def put_mode(request: Request) -> Response:
        who = admin(request)
        try:
            req = ModeRequest.model_validate(await body_of(request))
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise InvalidRequest(f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
        assert gw.controller is not None
        scope = scope_of(req.provider)
        await gw.controller.set_override(scope, req.mode, req.ttl_s, req.reason, who.name)
        return _json(modes_view())

    async def delete_mode(request: Request) -> Response:
        who = admin(request)
        body = await body_of(request)
        provider = request.query_params.get("provider") or body.get("provider")
        assert gw.controller is not None
        await gw.controller.clear_override(scope_of(provider), who.name, str(body.get("reason") or ""))
        return _json(modes_view())

    async def audit(request: Request) -> Response:
        admin(request)
        try:
            limit = min(max(int(request.query_params.get("limit", "50")), 1), 1000)
        except ValueError:
            raise InvalidRequest("limit must be a whole number.", param="limit") from None
        assert gw.controller is not None
        return _json({"object": "list", "data": await gw.controller.audit(limit)})

    async def status(request: Request) -> Response:
        admin(request)
        return _json(await status_view(gw))

    async def cancel_job(request: Request) -> Response:
        """Any client's queued job, by id: the responder's counterpart of ``DELETE /v1/jobs/{id}``."""
        who = admin(request)
        body = await body_of(request)
        assert gw.store is not None and gw.controller is not None
        job = await gw.store.get(request.path_params["job_id"])
        if job is None:
            raise NotFound("No such job.", code="job_not_found")
        # Checked first: the store also answers "cancelled" for a job that already was.
        now: str | None = job.status.value
        if job.status is JobStatus.QUEUED:
            now = await gw.store.cancel(job.id, job.tier)  # atomic, in case a drainer claims it meanwhile
        if job.status is not JobStatus.QUEUED or now != "cancelled":
            raise JobConflict(f"The job is {now}; only a queued job can be cancelled.")
        await gw.controller.audit_action(
            "job.cancel", who.name, {"job_id": job.id, "tier": job.tier, "model": job.model, "client": job.client},
            str(body.get("reason") or "")[:500])
        job = await gw.store.get(job.id) or job
        return _json(job.to_object())

    return [
        Route("/admin/mode", get_mode, methods=["GET"]),
        Route("/admin/mode", put_mode, methods=["PUT"]),
        Route("/admin/mode", delete_mode, methods=["DELETE"]),
        Route("/admin/audit", audit, methods=["GET"]),
        Route("/admin/status", status, methods=["GET"]),
        Route("/admin/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    ]


async def status_view(gw: Gateway) -> dict[str, Any]:
    """What a responder needs at a glance; no keys, prompts or URLs with credentials."""
    assert gw.controller is not None and gw.router is not None
    now = time.time()
    c = gw.controller
    deg = gw.config.degradation
    health = {}
    for provider in gw.config.providers:
        targets = {label: c.window.local_figures(label, now).as_dict()
                   for label in gw.router.circuit_states() if label.startswith(provider + "/")}
        health[provider] = {
            "window": c.auto.get(provider).figures if provider in c.auto else {},
            "local": c.window.local_figures(provider, now).as_dict(),
            "targets": targets,
        }
    queue: dict[str, Any] = {}
    dead: int | None = None
    batches: list[dict[str, Any]] = []
    if gw.store is not None:
        try:
            for tier in gw.tier_order:
                depth, age = await gw.store.depth(tier)
                queue[tier] = {"depth": depth, "oldest_age_s": round(age, 3)}
            dead = await gw.store.dead_letters()
            batches = await _provider_batches(gw, now)
        except GatewayError:
            queue = {"error": "queue unavailable"}
    admission = {
        name: {
            "capacity": lim.capacity,
            "inflight": dict(lim.inflight),
            "reserved": {t: s.reserved for t, s in lim.shares.items()},
        }
        for name, lim in gw.limiters.items()
    }
    return {
        "version": __version__,
        "uptime_s": round(now - gw.started_at, 1),
        "redis": "ok" if await gw.redis_ready() else "unreachable",
        "controller": {"leader": c.leader, "shared": c.shared, "automatic": deg.enabled},
        "modes": c.describe(now),
        "models": {m: c.effective(m).value for m in gw.config.models},
        "thresholds": {"enter": deg.enter.model_dump(), "exit": deg.exit.model_dump(),
                       "shed": deg.shed.model_dump() if deg.shed else None,
                       "window_s": deg.window_s, "min_samples": deg.min_samples},
        "health": health,
        "circuits": gw.router.circuit_states(),
        "admission": admission,
        "queue": queue,
        "dead_letters": dead,
        "provider_batches": batches,
        "draining": gw.draining,
    }


async def _provider_batches(gw: Gateway, now: float) -> list[dict[str, Any]]:
    """The provider batches submitted and not yet landed, oldest first (the set the poller walks)."""
    assert gw.store is not None
    r, keys = gw.store.redis, gw.store.keys
    try:
        members = [m.decode() if isinstance(m, bytes) else m for m in await r.smembers(keys.provider_batches)]
        async with r.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hgetall(keys.provider_batch(member))
            rows = await pipe.execute()
    except (RedisError, OSError):
        raise QueueUnavailable("Provider batches are recorded in Redis, which is unavailable.") from None
    out = []
    for raw in rows:
        if not raw:
            continue
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        submitted = float(rec.get("submitted_at", now))
        out.append({"provider": rec.get("provider"), "model": rec.get("model"), "route": rec.get("route"),
                    "upstream_id": rec.get("upstream_id"), "items": len(orjson.loads(rec.get("jobs", "[]"))),
                    "submitted_at": submitted, "age_s": round(max(now - submitted, 0.0), 1),
                    "polls": int(rec.get("polls", 0))})
    return sorted(out, key=lambda b: b["submitted_at"])
