"""The gateway's one error hierarchy.

Every error the gateway answers itself is a ``GatewayError``. Each subclass knows
its HTTP status, the OpenAI ``type`` and ``code`` it renders as, and whether a
client may retry it. Exceptions from aiohttp, httpx and redis are converted to
these where they enter (providers, store), so the rest of the code sees only
this hierarchy.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}

    def render(self) -> bytes:
        return orjson.dumps(self.body())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if not self.retryable:
            headers["x-should-retry"] = "false"
        return headers


# 4xx: the client's request is at fault.


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "tier_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class JobConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "job_not_cancellable"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(GatewayError):
    """A client went over its own limits (requests or tokens per minute, requests in flight)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class Saturated(GatewayError):
    """No admission slot became free within the admission timeout."""

    status = 429
    type = "rate_limit_error"
    code = "gateway_saturated"
    retryable = True


# 5xx: the gateway or what is behind it failed.


class UpstreamError(GatewayError):
    """Every target failed; the last failure was an upstream answer or a broken connection."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    retryable = True


class CircuitOpen(ServiceUnavailable):
    code = "circuit_open"


class LoadShed(ServiceUnavailable):
    code = "load_shed"


class QueueUnavailable(ServiceUnavailable):
    code = "queue_unavailable"


class RequestDeferred(ServiceUnavailable):
    code = "request_deferred"


class ShuttingDown(ServiceUnavailable):
    code = "shutting_down"


class ConfigError(Exception):
    """The configuration is invalid; ``path`` names the offending key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class AttemptFailed(GatewayError):
    """One upstream attempt failed. The router decides whether to retry, fall back or give up.

    ``upstream_status`` is the provider's HTTP status when it answered; ``timeout``
    marks a deadline hit; ``retry_after`` is the provider's hint in seconds.
    """

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        upstream_status: int | None = None,
        timeout: bool = False,
        retry_after: float | None = None,
        upstream_body: bytes | None = None,
        upstream_content_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.timeout = timeout
        self.retry_after = retry_after
        self.upstream_body = upstream_body
        self.upstream_content_type = upstream_content_type
        if timeout:
            self.status, self.code = 504, "upstream_timeout"

    @property
    def counts_against_circuit(self) -> bool:
        """Failures that say the target is broken; 429 and permanent 4xx do not."""
        if self.upstream_status is None:
            return True
        return self.upstream_status >= 500


class UpstreamRejected(GatewayError):
    """A permanent upstream error (400, 401, 403, 404, 422), returned to the client as it came."""

    def __init__(self, failure: AttemptFailed) -> None:
        super().__init__(failure.message)
        self.status = failure.upstream_status or 502
        self.failure = failure

    def render(self) -> bytes:
        body = self.failure.upstream_body
        ctype = (self.failure.upstream_content_type or "").split(";")[0].strip()
        if body and ctype == "application/json":
            return body
        return GatewayError.render(self)


RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500
