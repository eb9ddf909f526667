"""The OpenAI Files and Batch APIs: ``/v1/files`` and ``/v1/batches``.

Thin HTTP: authenticate, parse, and hand over to the file store and the client
batches of ``gateway.queue.client_batches``. Another client's file or batch is
indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.api.body import read_json
from gateway.api.uploads import read_upload
from gateway.app import Gateway
from gateway.auth import Client
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.files import MAX_EXPIRY_S, MIN_EXPIRY_S, UPLOAD_PURPOSES, FileRecord, expiry_seconds
from gateway.queue.client_batch import BatchRecord
from gateway.queue.client_batches import ClientBatches

MAX_FILES_PAGE = 10_000
MAX_BATCHES_PAGE = 100


class _ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_EXPIRY_S, le=MAX_EXPIRY_S)


class CreateBatch(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None
    output_expires_after: _ExpiresAfter | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 pairs")
            if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
                raise ValueError("keys are at most 64 characters and values at most 512")
        return value


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _page(objects: list[dict[str, Any]], has_more: bool) -> Response:
    return _json({"object": "list", "data": objects, "first_id": objects[0]["id"] if objects else None,
                  "last_id": objects[-1]["id"] if objects else None, "has_more": has_more})


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest("limit must be an integer.", param="limit") from None
    if not 1 <= value <= most:
        raise InvalidRequest(f"limit must be between 1 and {most}.", param="limit")
    return value


def routes(gw: Gateway) -> list[Route]:
    def auth(request: Request) -> tuple[Client, ClientBatches]:
        peer = request.client.host if request.client else None
        client = gw.auth.client(request.headers.get("authorization"), peer)
        if gw.batches is None:
            raise ServiceUnavailable("The Batch API is not ready yet.")
        return client, gw.batches

    async def owned_file(request: Request) -> tuple[Client, ClientBatches, FileRecord]:
        client, batches = auth(request)
        record = await batches.files.get(request.path_params["file_id"], client.name)
        if record is None:
            raise NotFound("No such file.", param="file_id", code="file_not_found")
        return client, batches, record

    async def owned_batch(request: Request) -> tuple[ClientBatches, BatchRecord]:
        client, batches = auth(request)
        record = await batches.get(request.path_params["batch_id"], client.name)
        if record is None:
            raise NotFound("No such batch.", param="batch_id", code="batch_not_found")
        return batches, record

    async def upload(request: Request) -> Response:
        client, batches = auth(request)
        writer = batches.files.writer()
        form = await read_upload(request, writer, gw.config.server.body_timeout_s)
        try:
            purpose = form.fields.get("purpose")
            if purpose not in UPLOAD_PURPOSES:
                raise InvalidRequest(f"purpose must be one of {sorted(UPLOAD_PURPOSES)}, not {purpose!r}.",
                                     param="purpose", code="invalid_purpose")
            if form.writer is None:
                raise InvalidRequest("The form has no file.", param="file", code="missing_file")
            problem = form.check.finish()
            if not form.filename.lower().endswith(".jsonl"):
                problem = "Invalid file format for Batch API. Must be .jsonl"
            if problem:
                raise InvalidRequest(problem, param="file", code="invalid_file_format")
            ttl = expiry_seconds(form.fields.get("expires_after[anchor]"), form.fields.get("expires_after[seconds]"),
                                 gw.config.files.ttl_s)
            record = await writer.commit(client.name, form.filename, purpose, ttl)
        except BaseException:
            await writer.abort()
            raise
        return _json(record.to_object())

    async def list_files(request: Request) -> Response:
        client, batches = auth(request)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be asc or desc.", param="order")
        records, more = await batches.files.page(
            client.name, purpose=request.query_params.get("purpose") or None,
            after=request.query_params.get("after") or None, limit=_limit(request, MAX_FILES_PAGE, MAX_FILES_PAGE),
            descending=order == "desc")
        return _page([r.to_object() for r in records], more)

    async def get_file(request: Request) -> Response:
        _, _, record = await owned_file(request)
        return _json(record.to_object())

    async def delete_file(request: Request) -> Response:
        _, batches, record = await owned_file(request)
        await batches.files.delete(record)
        return _json({"id": record.id, "object": "file", "deleted": True})

    async def file_content(request: Request) -> Response:
        _, batches, record = await owned_file(request)
        path = batches.files.path(record)
        if not path.exists():
            raise NotFound("The file's content is no longer available.", param="file_id", code="file_not_found")
        return FileResponse(path, media_type="application/octet-stream", filename=record.filename)

    async def create_batch(request: Request) -> Response:
        client, batches = auth(request)
        _, raw = await read_json(request, gw.config.server.max_body_bytes, gw.config.server.body_timeout_s)
        try:
            body = CreateBatch.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise InvalidRequest(f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
        input_file = await batches.files.get(body.input_file_id, client.name)
        if input_file is None:
            raise NotFound("No such file.", param="input_file_id", code="file_not_found")
        ttl = body.output_expires_after.seconds if body.output_expires_after else None
        record = await batches.create(client, input_file, body.endpoint, body.completion_window, body.metadata, ttl)
        return _json(record.to_object())

    async def list_batches(request: Request) -> Response:
        client, batches = auth(request)
        records, more = await batches.page(client.name, request.query_params.get("after") or None,
                                           _limit(request, 20, MAX_BATCHES_PAGE))
        return _page([r.to_object() for r in records], more)

    async def get_batch(request: Request) -> Response:
        _, record = await owned_batch(request)
        return _json(record.to_object())

    async def cancel_batch(request: Request) -> Response:
        batches, record = await owned_batch(request)
        return _json((await batches.cancel(record)).to_object())

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
