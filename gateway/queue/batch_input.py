"""The input file of a client batch: JSONL request lines, parsed and validated (pure).

Each line is ``{"custom_id", "method": "POST", "url", "body"}``. A file is valid
when every line is: errors name their 1-based line, as OpenAI's do, and any error
fails the whole batch before a single line is queued. Blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.api.body import check_params
from gateway.errors import InvalidRequest

# Batch endpoints and the router route each one is served by.
ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
MAX_REQUESTS = 50_000  # OpenAI's limit per batch
MAX_ERRORS = 100  # reported per failed batch; a broken file would otherwise repeat one error per line


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_object(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class BatchRequest:
    line: int
    custom_id: str
    model: str
    body: bytes  # the request body, re-serialized; unknown fields pass through


@dataclass(frozen=True, slots=True)
class Validation:
    requests: int
    errors: tuple[LineError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_line(raw: bytes, line: int, endpoint: str, models: Collection[str]) -> BatchRequest | LineError | None:
    """One line as a request, or what is wrong with it; ``None`` for a blank line."""
    if not raw.strip():
        return None
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineError("invalid_json_line", "This line is not parseable as valid JSON.", line)
    if not isinstance(item, dict):
        return LineError("invalid_json_line", "This line is not a JSON object.", line)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError("missing_required_parameter", "custom_id must be a non-empty string.", line, "custom_id")
    method = item.get("method")
    if method != "POST":
        return LineError("invalid_method", f"The method must be POST, not {method!r}.", line, "method")
    url = item.get("url")
    if url != endpoint:
        return LineError("url_mismatch", f"The url {url!r} does not match the batch endpoint {endpoint!r}.", line,
                         "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError("missing_required_parameter", "body must be a JSON object.", line, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return LineError("missing_required_parameter", "body.model must be a non-empty string.", line, "body.model")
    if model not in models:
        return LineError("model_not_found", f"The model {model!r} does not exist.", line, "body.model")
    try:
        check_params(ENDPOINTS[endpoint], body)  # what the HTTP path refuses, a line may not smuggle in
    except InvalidRequest as exc:
        return LineError(exc.code, exc.message, line, f"body.{exc.param}" if exc.param else "body")
    return BatchRequest(line, custom_id, model, orjson.dumps(body))


def validate(lines: Iterable[bytes], endpoint: str, models: Collection[str],
             max_requests: int = MAX_REQUESTS) -> Validation:
    """Check every line: JSON, fields, the endpoint, known models, unique custom_ids, the count."""
    errors: list[LineError] = []
    seen: set[str] = set()
    count = 0
    for number, raw in enumerate(lines, 1):
        parsed = parse_line(raw, number, endpoint, models)
        if parsed is None:
            continue
        if isinstance(parsed, BatchRequest):
            count += 1
            if parsed.custom_id in seen:
                message = f"The custom_id {parsed.custom_id!r} is used by an earlier line."
                parsed = LineError("duplicate_custom_id", message, number, "custom_id")
            else:
                seen.add(parsed.custom_id)
        if isinstance(parsed, LineError) and len(errors) < MAX_ERRORS:
            errors.append(parsed)
    if count == 0 and not errors:
        errors.append(LineError("empty_file", "The input file has no requests."))
    if count > max_requests:
        errors.append(LineError("too_many_tasks", f"The batch has {count} requests; the limit is {max_requests}."))
    return Validation(count, tuple(errors))
