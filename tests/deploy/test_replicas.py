"""Several processes around one Redis, as the chart deploys them: two `serve --no-worker` replicas and a worker.

Queued jobs submitted to either replica are run once, by the worker, and any
replica answers for them; an operator override made through one replica is in
force on the other within a second.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, BATCH_KEY, CLIENT_KEY, base_config
from tests.support.gateway_proc import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream

JOBS = 16


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=20.0) as client:
        yield client


@pytest.fixture(scope="module")
def config(upstream_server: FakeUpstream, redis_server: RedisServer) -> dict[str, Any]:
    config = base_config(upstream_server, redis_server.url)
    # A namespace of its own in the session's Redis, so no other test's gateway drains these jobs.
    config["queue"] = {"namespace": f"replicas-{secrets.token_hex(4)}", "mini_batch_wait_s": 0.1}
    return config


@pytest.fixture(scope="module")
def replicas(make_module_gateway: Callable[..., GatewayProcess], config: dict[str, Any]) -> list[GatewayProcess]:
    """Two API replicas that run no drainers, as the chart's gateway Deployment does beside its workers."""
    return [make_module_gateway(config, args=("--no-worker",)) for _ in range(2)]


def _submit(http: httpx.Client, gw: GatewayProcess, key: str, tier: str, marker: str) -> str:
    response = http.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Prefer": "respond-async", "X-Gateway-Tier": tier},
        json={"model": "chat", "messages": [{"role": "user", "content": marker}]},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["object"] == "gateway.job" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    return str(job["id"])


def _job(http: httpx.Client, gw: GatewayProcess, key: str, job_id: str, wait: float | None = None) -> dict[str, Any]:
    params = {"wait": str(wait)} if wait else None
    response = http.get(f"{gw.url}/v1/jobs/{job_id}", params=params, headers={"Authorization": f"Bearer {key}"},
                        timeout=20.0 + (wait or 0))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_jobs_from_either_replica_are_run_once_by_the_worker(
    replicas: list[GatewayProcess], make_gateway: Callable[..., GatewayProcess], config: dict[str, Any],
    upstream: FakeUpstream, http: httpx.Client,
) -> None:
    run = secrets.token_hex(4)
    submitted: dict[str, tuple[str, str, int]] = {}  # job id -> (client key, marker, replica index)
    for i in range(JOBS):
        # Half on a deferrable tier (the web client), half on the always-async tier (the batch client).
        key, tier = (CLIENT_KEY, "standard") if i % 2 else (BATCH_KEY, "background")
        marker = f"job {i} of run {run}"
        submitted[_submit(http, replicas[i % 2], key, tier, marker)] = (key, marker, i % 2)
    assert len(submitted) == JOBS

    # The replicas run no drainers: with no worker yet, nothing reaches the provider.
    time.sleep(0.5)
    assert not [c for c in upstream.calls() if run in str(c.body)]
    some_id, (some_key, _, _) = next(iter(submitted.items()))
    assert _job(http, replicas[0], some_key, some_id)["status"] == "queued"

    make_gateway(config, command="worker")
    for job_id, (key, _, index) in submitted.items():
        other = replicas[1 - index]  # ask the replica that did not take the job
        deadline = time.monotonic() + 20
        job = _job(http, other, key, job_id, wait=5)
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            job = _job(http, other, key, job_id, wait=5)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1, job
        assert job["response"]["status_code"] == 200
        assert job["completed_at"] is not None

    # Exactly once: each job's request reached the provider one time, no more.
    seen = Counter(c.body["messages"][0]["content"] for c in upstream.calls() if run in str(c.body))
    assert seen == Counter({marker: 1 for _, marker, _ in submitted.values()})
    time.sleep(0.5)  # nothing is redelivered later either
    assert len([c for c in upstream.calls() if run in str(c.body)]) == JOBS
    for job_id, (key, _, index) in submitted.items():
        job = _job(http, replicas[index], key, job_id)
        assert (job["status"], job["attempts"]) == ("succeeded", 1)


def _admin(http: httpx.Client, gw: GatewayProcess, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = http.request(method, gw.url + "/admin/mode", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _seen_within(check: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not check():
        elapsed = time.monotonic() - start
        assert elapsed < seconds, f"not seen within {seconds}s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_an_override_through_one_replica_is_seen_by_the_other_within_a_second(
    replicas: list[GatewayProcess], upstream: FakeUpstream, http: httpx.Client,
) -> None:
    a, b = replicas
    assert _admin(http, b, "GET")["scopes"]["global"]["mode"] == "normal"

    _admin(http, a, "PUT", {"mode": "degraded", "ttl_s": 300, "reason": "replica test"})

    def b_degraded() -> bool:
        scope = _admin(http, b, "GET")["scopes"]["global"]
        return bool(scope["mode"] == "degraded" and scope["override"] and scope["override"]["reason"] == "replica test")

    _seen_within(b_degraded, 1.0)
    # Requests on b follow the mode: X-Gateway-Mode says so on an answered request.
    answer = http.post(b.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                       json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and answer.headers["x-gateway-mode"] == "degraded"

    # Cleared through b, back to normal on a.
    _admin(http, b, "DELETE", {"reason": "replica test over"})
    _seen_within(lambda: _admin(http, a, "GET")["scopes"]["global"]["mode"] == "normal", 1.0)
