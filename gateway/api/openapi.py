"""``GET /openapi.json``: the gateway's own endpoints, described for clients and fuzzers.

Request bodies are described as loosely as the gateway accepts them: the fields
it checks are typed, everything else passes through to the provider.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_TOKENS = {"type": ["integer", "null"], "minimum": 1}
_COMMON = {
    "model": {"type": "string"},
    "stream": {"type": ["boolean", "null"]},
    "max_tokens": _TOKENS,
    "max_completion_tokens": _TOKENS,
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
}
_HEADERS = [
    {"name": "X-Gateway-Tier", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "X-Gateway-Callback-Url", "in": "header", "required": False, "schema": {"type": "string"}},
]
_PROXIED = _errors(400, 401, 403, 404, 408, 413, 415, 429, 502, 503, 504)


def _proxied(summary: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "required": ["model", *required], "properties": {**_COMMON, **extra},
              "additionalProperties": True}
    return {"post": {
        "summary": summary, "parameters": _HEADERS, "requestBody": _json_body(schema),
        "responses": {"200": _ok("the provider's answer (JSON, or SSE when stream is true)"),
                      "202": _ok("queued: a gateway.job object"), **_PROXIED},
    }}


def document() -> dict[str, Any]:
    message = {"type": "object", "properties": {"role": {"type": "string"}}, "additionalProperties": True}
    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway", "version": __version__,
                 "description": "An OpenAI-compatible hybrid realtime/batch LLM gateway."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["message", "type"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": _proxied(
                "Create a chat completion",
                {"messages": {"type": "array", "minItems": 1, "items": message}}, ["messages"]),
            "/v1/completions": _proxied("Create a completion", {"prompt": {}}, ["prompt"]),
            "/v1/embeddings": _proxied("Create embeddings", {"input": {}}, ["input"]),
            "/v1/models": {"get": {"summary": "List models", "responses": {"200": _ok("models"), **_errors(401)}}},
            "/v1/models/{model}": {"get": {
                "summary": "Retrieve a model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("a model"), **_errors(401, 404)}}},
            "/v1/jobs/{job_id}": {
                "get": {"summary": "Fetch a deferred job", "parameters": [
                    *job_id, {"name": "wait", "in": "query", "required": False,
                              "schema": {"type": "number", "minimum": 0, "maximum": 60}}],
                        "responses": {"200": _ok("a gateway.job"), **_errors(400, 401, 404, 503)}},
                "delete": {"summary": "Cancel a queued job", "parameters": job_id,
                           "responses": {"200": _ok("the cancelled job"), **_errors(401, 404, 409, 503)}},
            },
            "/v1/files": {
                "get": {"summary": "List files", "responses": {"200": _ok("files"), **_errors(400, 401)}},
                "post": {"summary": "Upload a file", "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "purpose"], "properties": {
                        "file": {"type": "string", "format": "binary"}, "purpose": {"type": "string"}}}}}},
                    "responses": {"200": _ok("a file"), **_errors(400, 401, 408, 413, 415, 503)}},
            },
            "/v1/files/{file_id}": {
                "get": {"summary": "Retrieve a file", "parameters": [
                    {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                        "responses": {"200": _ok("a file"), **_errors(401, 404)}},
                "delete": {"summary": "Delete a file", "parameters": [
                    {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                           "responses": {"200": _ok("deleted"), **_errors(401, 404)}},
            },
            "/v1/files/{file_id}/content": {"get": {"summary": "A file's content", "parameters": [
                {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("content", {"type": "string"}, "application/octet-stream"), **_errors(401, 404)}}},
            "/v1/batches": {
                "get": {"summary": "List batches", "responses": {"200": _ok("batches"), **_errors(400, 401)}},
                "post": {"summary": "Create a batch", "requestBody": _json_body({
                    "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
                    "properties": {"input_file_id": {"type": "string"}, "endpoint": {"type": "string"},
                                   "completion_window": {"type": "string"}, "metadata": {"type": ["object", "null"]}}}),
                         "responses": {"200": _ok("a batch"), **_errors(400, 401, 404, 408, 413, 415, 503)}},
            },
            "/v1/batches/{batch_id}": {"get": {"summary": "Retrieve a batch", "parameters": [
                {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("a batch"), **_errors(401, 404)}}},
            "/v1/batches/{batch_id}/cancel": {"post": {"summary": "Cancel a batch", "parameters": [
                {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("a batch"), **_errors(401, 404, 409)}}},
            "/admin/mode": {
                "get": {"summary": "Effective modes", "responses": {"200": _ok("modes"), **_errors(401)}},
                "put": {"summary": "Override a mode", "requestBody": _json_body({
                    "type": "object", "required": ["mode", "reason"], "additionalProperties": False,
                    "properties": {"mode": {"enum": ["normal", "degraded", "shed"]}, "provider": {"type": ["string", "null"]},
                                   "ttl_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
                                   "reason": {"type": "string", "minLength": 1}}}),
                        "responses": {"200": _ok("modes"), **_errors(400, 401, 404, 503)}},
                "delete": {"summary": "Clear an override", "parameters": [
                    {"name": "provider", "in": "query", "required": False, "schema": {"type": "string"}}],
                           "responses": {"200": _ok("modes"), **_errors(401, 404, 503)}},
            },
            "/admin/status": {"get": {"summary": "Gateway status", "responses": {"200": _ok("status"), **_errors(401)}}},
            "/admin/audit": {"get": {"summary": "Audit log", "parameters": [
                {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"200": _ok("audit entries"), **_errors(400, 401, 503)}}},
            "/admin/jobs/{job_id}": {"delete": {"summary": "Cancel any client's queued job", "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("a job"), **_errors(401, 404, 409, 503)}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _ok("alive")}}},
            "/readyz": {"get": {"summary": "Readiness", "security": [], "responses": {
                "200": _ok("ready"), "503": _ok("not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
                "200": _ok("metrics", {"type": "string"}, "text/plain")}}},
        },
    }


def routes(gw: object) -> list[Route]:
    body = orjson.dumps(document())

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return [Route("/openapi.json", openapi, methods=["GET"])]
