"""The error hierarchy: status, OpenAI type and code, retryability, and how each renders."""

from __future__ import annotations

import orjson
import pytest

from gateway import errors as e


@pytest.mark.parametrize(
    "error,status,type_,code,should_retry_header",
    [
        (e.InvalidRequest("bad"), 400, "invalid_request_error", "invalid_request", "false"),
        (e.InvalidJSON("bad"), 400, "invalid_request_error", "invalid_json", "false"),
        (e.AuthenticationFailed("who"), 401, "authentication_error", "invalid_api_key", "false"),
        (e.PermissionDenied("no"), 403, "permission_error", "tier_not_allowed", "false"),
        (e.NotFound("no"), 404, "invalid_request_error", "not_found", "false"),
        (e.ModelNotFound("no"), 404, "invalid_request_error", "model_not_found", "false"),
        (e.MethodNotAllowed("no"), 405, "invalid_request_error", "method_not_allowed", "false"),
        (e.PayloadTooLarge("big"), 413, "invalid_request_error", "request_too_large", "false"),
        (e.Saturated("busy"), 429, "rate_limit_error", "gateway_saturated", None),
        (e.UpstreamError("down"), 502, "upstream_error", "upstream_error", None),
        (e.UpstreamTimeout("slow"), 504, "upstream_error", "upstream_timeout", None),
        (e.ServiceUnavailable("later"), 503, "server_error", "service_unavailable", None),
        (e.CircuitOpen("open"), 503, "server_error", "circuit_open", None),
        (e.LoadShed("shed"), 503, "server_error", "load_shed", None),
        (e.RequestDeferred("queued"), 503, "server_error", "request_deferred", None),
        (e.GatewayError("oops"), 500, "server_error", "internal_error", "false"),
    ],
)
def test_each_error_knows_its_status_shape_and_retryability(error, status, type_, code, should_retry_header):
    assert error.status == status
    body = orjson.loads(error.render())
    assert body == {"error": {"message": error.message, "type": type_, "param": None, "code": code}}
    assert error.response_headers().get("x-should-retry") == should_retry_header


def test_param_code_headers_and_extra_fields_render():
    error = e.RequestDeferred(
        "deferred", param="model", code="request_deferred", headers={"Retry-After": "15"}, extra={"job_id": "job_1"}
    )
    assert orjson.loads(error.render()) == {
        "error": {"message": "deferred", "type": "server_error", "param": "model", "code": "request_deferred",
                  "job_id": "job_1"}
    }
    assert error.response_headers() == {"Retry-After": "15"}
    error.headers["X-Extra"] = "1"
    assert "X-Extra" not in e.RequestDeferred("again").headers  # headers are per instance


@pytest.mark.parametrize(
    "kwargs,status,code,retryable",
    [
        ({"retryable": True, "upstream_status": 500}, 502, "upstream_error", True),
        ({"retryable": True, "timeout": True}, 504, "upstream_timeout", True),
        ({"retryable": False, "upstream_status": 400}, 502, "upstream_error", False),
    ],
)
def test_attempt_failed(kwargs, status, code, retryable):
    failure = e.AttemptFailed("x", **kwargs)
    assert (failure.status, failure.code, failure.retryable) == (status, code, retryable)


@pytest.mark.parametrize(
    "upstream_status,timeout,counts",
    [(500, False, True), (503, False, True), (None, False, True), (None, True, True),
     (429, False, False), (400, False, False), (404, False, False)],
)
def test_which_failures_count_against_the_circuit(upstream_status, timeout, counts):
    failure = e.AttemptFailed("x", retryable=True, upstream_status=upstream_status, timeout=timeout)
    assert failure.counts_against_circuit is counts


@pytest.mark.parametrize(
    "status,retryable",
    [(400, False), (401, False), (403, False), (404, False), (422, False), (408, True), (409, True), (429, True),
     (500, True), (502, True), (503, True), (504, True), (529, True), (599, True), (200, False)],
)
def test_is_retryable_status(status, retryable):
    assert e.is_retryable_status(status) is retryable


def test_a_permanent_upstream_error_is_passed_through_as_it_came():
    upstream = b'{"error":{"message":"bad tools","type":"invalid_request_error","param":"tools","code":null}}'
    failure = e.AttemptFailed("Upstream answered 422.", retryable=False, upstream_status=422, upstream_body=upstream,
                              upstream_content_type="application/json; charset=utf-8")
    rejected = e.UpstreamRejected(failure)
    assert rejected.status == 422
    assert rejected.render() == upstream
    assert rejected.response_headers()["x-should-retry"] == "false"


@pytest.mark.parametrize("body,ctype", [(b"<html>nope</html>", "text/html"), (b"", "application/json"), (None, None)])
def test_a_permanent_upstream_error_without_a_json_body_is_rendered_openai_shaped(body, ctype):
    failure = e.AttemptFailed("Upstream answered 404.", retryable=False, upstream_status=404, upstream_body=body,
                              upstream_content_type=ctype)
    rejected = e.UpstreamRejected(failure)
    error = orjson.loads(rejected.render())["error"]
    assert rejected.status == 404
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] == "Upstream answered 404."


def test_config_error_names_its_path():
    err = e.ConfigError("tiers.interactive.timeout_s", "must be greater than 0")
    assert str(err) == "tiers.interactive.timeout_s: must be greater than 0"
    assert str(e.ConfigError("", "not a mapping")) == "not a mapping"
