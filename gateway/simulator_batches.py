"""The simulator's OpenAI Files and Batch APIs: enough of both for the gateway to pack jobs into.

A batch stays ``validating``/``in_progress`` for the behaviour's
``batch_latency_ms``, then completes with an output file (answers built by the
same ``Simulator`` as realtime calls) and an error file (lines that drew a
fault). Everything lives in memory: a restarted simulator forgets its batches,
as a real provider would not, so restart tests restart the gateway instead.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.providers.simulator import Simulator

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}, status)


@dataclass
class FakeBatch:
    id: str
    endpoint: str
    input_file_id: str
    created_at: int
    ready_at: float
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
                "completion_window": "24h", "status": self.status, "created_at": self.created_at,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "request_counts": self.counts, "errors": {"object": "list", "data": self.errors} if self.errors else None,
                "metadata": None}


class FakeBatchAPI:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)
        self.batches: dict[str, FakeBatch] = {}
        self.submissions = 0

    def _advance(self, batch: FakeBatch) -> None:
        """Move a batch on by the clock: in progress, then completed with its files written."""
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return
        if time.time() < batch.ready_at:
            batch.status = "in_progress"
            return
        purpose, content = self.files[batch.input_file_id]
        lines = [orjson.loads(raw) for raw in content.splitlines() if raw.strip()]
        out, err = self.sim.run_batch(batch.endpoint.removeprefix("/v1/"), lines)
        batch.counts = {"total": len(lines), "completed": len(out), "failed": len(err)}
        if out:
            batch.output_file_id = self._store("batch_output", b"\n".join(out) + b"\n")
        if err:
            batch.error_file_id = self._store("batch_output", b"\n".join(err) + b"\n")
        batch.status = "completed"

    def _store(self, purpose: str, content: bytes) -> str:
        fid = f"file-{secrets.token_hex(12)}"
        self.files[fid] = (purpose, content)
        return fid

    def routes(self) -> list[Route]:
        async def upload(request: Request) -> Response:
            form = await request.form()
            purpose = form.get("purpose")
            upload = form.get("file")
            if purpose != "batch" or upload is None or isinstance(upload, str):
                return _error("purpose must be batch and a file is required")
            content = await upload.read()
            fid = self._store("batch", content)
            return _json({"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                          "filename": upload.filename, "purpose": "batch", "status": "processed"})

        async def content(request: Request) -> Response:
            item = self.files.get(request.path_params["file_id"])
            if item is None:
                return _error("no such file", 404)
            return Response(item[1], media_type="application/jsonl")

        async def create(request: Request) -> Response:
            body = orjson.loads(await request.body())
            endpoint = body.get("endpoint")
            if endpoint not in ENDPOINTS or body.get("input_file_id") not in self.files:
                return _error("unknown endpoint or input file")
            self.submissions += 1
            b = self.sim.behaviour
            batch = FakeBatch(f"batch_{secrets.token_hex(12)}", endpoint, body["input_file_id"], int(time.time()),
                              time.time() + b.batch_latency_ms / 1000.0)
            self.batches[batch.id] = batch
            return _json(batch.to_object())

        async def get(request: Request) -> Response:
            batch = self.batches.get(request.path_params["batch_id"])
            if batch is None:
                return _error("no such batch", 404)
            self._advance(batch)
            return _json(batch.to_object())

        async def cancel(request: Request) -> Response:
            batch = self.batches.get(request.path_params["batch_id"])
            if batch is None:
                return _error("no such batch", 404)
            if batch.status not in ("completed", "failed", "expired"):
                batch.status = "cancelled"
            return _json(batch.to_object())

        async def behaviour(request: Request) -> Response:
            return _json({"submissions": self.submissions, "batches": len(self.batches)})

        return [
            Route("/v1/files", upload, methods=["POST"]),
            Route("/v1/files/{file_id}/content", content, methods=["GET"]),
            Route("/v1/batches", create, methods=["POST"]),
            Route("/v1/batches/{batch_id}", get, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
            Route("/_sim/batches", behaviour, methods=["GET"]),
        ]
