"""Helpers for degradation tests: a config with short windows, the admin API, and polling with a deadline."""

from __future__ import annotations

import atexit
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from tests.conftest import ADMIN_KEY, CLIENT_KEY, base_config
from tests.support.upstream import FakeUpstream

T = TypeVar("T")

# One pooled client for the admin API and raw requests (a fresh client per poll costs tens of ms).
_http = httpx.Client(timeout=20.0)
atexit.register(_http.close)

ENTER = {"p95_latency_s": 0.5, "rate_limited_ratio": 0.2, "error_ratio": 0.5}
EXIT = {"p95_latency_s": 0.25, "rate_limited_ratio": 0.05, "error_ratio": 0.1}


def degradation_config(upstream: FakeUpstream, redis_url: str, *, window_s: float = 3, min_samples: int = 5,
                       hold_s: float = 2, **degradation: Any) -> dict[str, Any]:
    """``base_config`` with fast degradation settings and a namespace of its own in the shared Redis."""
    config = base_config(upstream, redis_url)
    config["queue"] = {"namespace": "t" + secrets.token_hex(5), "mini_batch_wait_s": 0.2}
    config["degradation"] = {
        "enabled": True, "window_s": window_s, "min_samples": min_samples,
        "enter": dict(ENTER), "exit": {**EXIT, "hold_s": hold_s}, **degradation,
    }
    return config


def admin(gw: Any, method: str, path: str, *, key: str | None = ADMIN_KEY, json: Any = None,
          params: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return _http.request(method, gw.url + path, headers=headers, json=json, params=params)


def modes(gw: Any) -> dict[str, Any]:
    r = admin(gw, "GET", "/admin/mode")
    assert r.status_code == 200, r.text
    return r.json()


def mode_of(gw: Any, scope: str) -> str:
    return modes(gw)["scopes"][scope]["mode"]


def audit(gw: Any, limit: int = 100) -> list[dict[str, Any]]:
    r = admin(gw, "GET", "/admin/audit", params={"limit": limit})
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["data"]))  # oldest first


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")
        time.sleep(interval)
        last = check()
    return last


def wait_mode(gw: Any, scope: str, mode: str, timeout: float) -> dict[str, Any]:
    """Poll GET /admin/mode until ``scope`` is in ``mode``; returns that scope's view."""
    def check() -> dict[str, Any] | None:
        item = modes(gw)["scopes"][scope]
        return item if item["mode"] == mode else None

    return wait_for(check, timeout, f"{scope} in {mode} mode on {gw.url}")


def chat(gw: Any, *, model: str = "chat", tier: str | None = None, prefer_async: bool = False,
         key: str = CLIENT_KEY, timeout: float = 20.0) -> httpx.Response:
    """One chat completion through httpx, for answers the SDK cannot express (202 jobs, held 503s)."""
    headers = {"Authorization": f"Bearer {key}"}
    if tier:
        headers["X-Gateway-Tier"] = tier
    if prefer_async:
        headers["Prefer"] = "respond-async"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return _http.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def in_parallel(n: int, call: Callable[[], T]) -> list[T]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))
