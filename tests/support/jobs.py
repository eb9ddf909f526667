"""Helpers for deferred-execution tests: submitting async jobs and following them to the end."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx

from gateway.queue.keys import Keys

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


def namespace(prefix: str) -> str:
    """A queue namespace of its own, so no other gateway on the shared Redis drains these jobs."""
    return f"{prefix}-{secrets.token_hex(4)}"


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def submit(gw: Any, key: str, model: str, *, tier: str | None = None, content: str = "hello",
           extra_headers: dict[str, str] | None = None, http: httpx.Client | None = None, **body: Any) -> httpx.Response:
    """POST a chat completion with ``Prefer: respond-async``; returns the raw answer (202 when queued)."""
    h = headers(key, Prefer="respond-async", **(extra_headers or {}))
    if tier is not None:
        h["X-Gateway-Tier"] = tier
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    post = http.post if http is not None else httpx.post
    return post(gw.url + "/v1/chat/completions", json=payload, headers=h, timeout=10.0)


def submit_job(gw: Any, key: str, model: str, **kwargs: Any) -> str:
    response = submit(gw, key, model, **kwargs)
    assert response.status_code == 202, (response.status_code, response.text)
    return response.json()["id"]


def get_job(gw: Any, key: str, job_id: str, wait: float | None = None, http: httpx.Client | None = None) -> httpx.Response:
    """GET the job; pass ``http`` to reuse one client's connections when polling many times."""
    params = {"wait": str(wait)} if wait is not None else None
    timeout = 10.0 + (wait or 0.0)
    if http is None:
        return httpx.get(f"{gw.url}/v1/jobs/{job_id}", params=params, headers=headers(key), timeout=timeout)
    return http.get(f"{gw.url}/v1/jobs/{job_id}", params=params, headers=headers(key), timeout=timeout)


def wait_for(gw: Any, key: str, job_id: str, timeout: float = 15.0, until: frozenset[str] = TERMINAL) -> dict[str, Any]:
    """Poll the job until its status is in ``until``; fail with its last state when ``timeout`` runs out."""
    with httpx.Client() as http:
        return _poll(gw, key, job_id, timeout, until, http)


def _poll(gw: Any, key: str, job_id: str, timeout: float, until: frozenset[str], http: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = get_job(gw, key, job_id, http=http)
        assert response.status_code == 200, (response.status_code, response.text)
        job = response.json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {sorted(until)} within {timeout}s: {job}")


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not hold within {timeout}s")


# -- looking into the queue's Redis (each call opens and closes its own client)


def job_count(redis_server: Any, ns: str) -> int:
    """Job hashes in the namespace: it grows by one for each job queued."""
    with redis_server.client() as r:
        return sum(1 for _ in r.scan_iter(match=Keys(ns).job("*"), count=1000))


def stream_length(redis_server: Any, ns: str, tier: str) -> int:
    with redis_server.client() as r:
        return int(r.xlen(Keys(ns).stream(tier)))


def dead_letters(redis_server: Any, ns: str) -> list[str]:
    """Job ids in the dead-letter stream, oldest first."""
    with redis_server.client() as r:
        return [fields[b"j"].decode() for _, fields in r.xrange(Keys(ns).dead)]
