"""Clients for tests: the official ``openai`` SDK pointed at a live gateway, and a metrics reader."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families


def sdk(gw: Any, key: str, **kwargs: Any) -> openai.OpenAI:
    """An SDK client for a running gateway; the SDK's own retries are off so tests see each answer."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 20.0)
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, **kwargs)


def metric(gw: Any, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0.0 when that label set was never touched)."""
    text = httpx.get(gw.url + "/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def assert_openai_error(response: httpx.Response, status: int, *, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with an OpenAI-shaped error body; returns the ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    return error
