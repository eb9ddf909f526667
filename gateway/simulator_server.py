"""``gateway simulator``: the simulator as a standalone OpenAI-compatible server.

Trials, load tests and drills point providers of kind ``openai`` at it. Its
behaviour (latency, faults) is read and changed at ``/_sim/behaviour`` while it
runs, which is how a drill replays an incident timeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.config import SimulatorConfig
from gateway.providers.simulator import Simulator
from gateway.simulator_anthropic import anthropic_routes
from gateway.simulator_batches import FakeBatchAPI


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, headers=headers, media_type="application/json")


def build_simulator_app(behaviour: SimulatorConfig | None = None, seed: int | None = None) -> Starlette:
    sim = Simulator(behaviour or SimulatorConfig(), seed)

    def serve(route: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return _json({"error": {"message": "invalid JSON", "type": "invalid_request_error", "param": None, "code": None}}, 400)
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                return _json({"error": {"message": "model is required", "type": "invalid_request_error", "param": "model", "code": None}}, 400)
            model = body["model"]
            fault = sim.fault()
            stream = bool(body.get("stream")) and route != "embeddings"
            if fault.status != 200:
                await asyncio.sleep(sim.latency_s() / 4)
                headers = {"retry-after": str(fault.retry_after_s)} if fault.retry_after_s else None
                return Response(sim.error_body(fault), fault.status, headers=headers, media_type="application/json")
            if not stream:
                await asyncio.sleep(sim.latency_s())
                return _json(sim.answer(route, model, body))
            events = sim.chunks(route, model, body)

            async def gen() -> AsyncIterator[bytes]:
                b = sim.behaviour
                await asyncio.sleep(b.first_token_ms / 1000.0)
                for i, ev in enumerate(events):
                    if i and b.chunk_interval_ms:
                        await asyncio.sleep(b.chunk_interval_ms / 1000.0)
                    yield ev

            return StreamingResponse(gen(), media_type="text/event-stream")

        return endpoint

    async def models(request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": "sim-1", "object": "model", "created": 0, "owned_by": "simulator"}]})

    async def behaviour_endpoint(request: Request) -> Response:
        if request.method == "PUT":
            try:
                changes = orjson.loads(await request.body())
                sim.update(**changes)
            except (orjson.JSONDecodeError, TypeError, ValidationError) as exc:
                return _json({"error": {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}}, 400)
        return _json({**sim.behaviour.model_dump(), "calls": sim.calls})

    batches = FakeBatchAPI(sim)
    return Starlette(
        routes=[
            *batches.routes(),
            *anthropic_routes(sim),
            Route("/v1/chat/completions", serve("chat/completions"), methods=["POST"]),
            Route("/v1/completions", serve("completions"), methods=["POST"]),
            Route("/v1/embeddings", serve("embeddings"), methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_sim/behaviour", behaviour_endpoint, methods=["GET", "PUT"]),
        ]
    )
