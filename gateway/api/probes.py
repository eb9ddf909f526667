"""Probes: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import Gateway


def routes(gw: Gateway) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        redis_ok = await gw.redis_ready()
        ready = redis_ok and not gw.draining
        body = {
            "status": "ready" if ready else "not_ready",
            "config": "loaded",
            "redis": "ok" if redis_ok else "unreachable",
            "draining": gw.draining,
        }
        return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
