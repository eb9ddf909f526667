"""The gateway's own ``/openapi.json``, and a bounded schemathesis fuzz run against a live gateway.

Every generated request must get valid JSON (or the SSE of a stream, or the
Prometheus text of ``/metrics``) with a status the document lists, and never a
5xx other than the documented 502/503/504. ``/healthz`` must answer afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import ADMIN_KEY, CLIENT_KEY, base_config

EXAMPLES_PER_OPERATION = 5  # about 25 operations, plus schemathesis's explicit cases: a bounded CI budget


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    config = base_config(upstream_server, redis_server.url)
    config["server"] = {"log_format": "json", "max_body_bytes": 256 * 1024, "body_timeout_s": 5}
    return make_module_gateway(config)


@pytest.fixture(scope="module")
def api_schema(gateway):
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def test_the_document_describes_every_public_route(gateway):
    response = httpx.get(gateway.url + "/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/files",
                 "/v1/files/{file_id}/content", "/v1/batches", "/v1/jobs/{job_id}", "/admin/mode", "/healthz"):
        assert path in doc["paths"], path


def documented(case: Any) -> set[str]:
    return set(case.operation.definition.raw.get("responses", {}))


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck), database=None)
def test_fuzz_every_answer_is_documented_json(case, gateway):
    key = ADMIN_KEY if case.path.startswith("/admin") else CLIENT_KEY
    headers = dict(case.headers or {})
    headers["Authorization"] = f"Bearer {key}"  # refusals without a key are tested elsewhere; get past auth here
    response = case.call(headers=headers, timeout=30)
    status = response.status_code
    where = f"{case.method} {case.formatted_path} -> {status}: {response.text[:300]!r}"
    assert status < 500 or status in (502, 503, 504), where
    if case.method.upper() != case.operation.method.upper():  # schemathesis also tries methods a path lacks
        assert status == 405, where
    else:
        assert str(status) in documented(case), where
    ctype = response.headers.get("content-type", "")
    if isinstance(ctype, list):
        ctype = ctype[0]
    if ctype.startswith("text/event-stream") or case.path == "/metrics" or status in (204, 304):
        return
    assert ctype.startswith("application/json"), where
    body = json.loads(response.content)
    if status >= 400:
        assert isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str), where


def test_after_the_fuzz_the_gateway_is_healthy(gateway):
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
    ok = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    assert ok.status_code == 200, ok.text
    assert gateway.proc is not None and gateway.proc.poll() is None
