"""The drainer: mini-batches inside the quota envelope, retries to the dead-letter stream, deadlines.

One gateway (API and in-process worker) serves the module. Each scenario has its
own provider and model on the fake upstream, so their concurrency and buckets
do not mix.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai.types.chat import ChatCompletion

from gateway.api.body import (
    estimate_tokens,  # the TPM estimate the drain envelope charges
)
from gateway.queue.drainer import retry_delay_s
from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import (
    dead_letters,
    get_job,
    headers,
    namespace,
    submit_job,
    wait_for,
    wait_until,
)
from tests.support.sdk import sdk
from tests.support.upstream import Behaviour

# -- pure decisions


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 0 + 256),  # '""' is 2 characters: 0 tokens, and the default output cap
        ({"messages": [{"role": "user", "content": "x" * 400}]}, 430 // 4 + 256),  # 30 characters of JSON + 400
        ({"messages": [], "max_tokens": 50}, 0 + 50),
        ({"messages": [], "max_completion_tokens": 70, "max_tokens": 50}, 0 + 70),
        ({"messages": [], "max_tokens": "lots"}, 0 + 256),  # not a number: the default
        ({"prompt": "y" * 80, "max_tokens": 10}, 82 // 4 + 10),
        ({"input": ["a" * 38, "b" * 38]}, 83 // 4 + 256),  # '["aa…","bb…"]' is 83 characters
    ],
    ids=["empty", "chat", "max_tokens", "max_completion_tokens-wins", "bad-cap", "completions", "embeddings"],
)
def test_estimate_tokens(body, expected):
    assert estimate_tokens(body) == expected


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 16.0), (7, 30.0), (50, 30.0)],
)
def test_retry_delay_s(attempts, delay):
    assert retry_delay_s(attempts) == delay


# -- against a live gateway

RPM = 3000  # 50 requests/s, one second (50) of burst
RATE = RPM / 60
DRAIN_CAP = 8 - 2 - 1  # max_concurrency minus the interactive and standard reservations
JOBS = 200


@pytest.fixture(scope="module")
def ns() -> str:
    return namespace("drain")


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server, ns):
    config = base_config(upstream_server, redis_server.url)
    up = upstream_server.base_url
    never_open = {"failure_threshold": 1000, "cooldown_s": 1.0}
    config["providers"].update({
        "drainp": {"kind": "openai", "base_url": up, "max_concurrency": 8, "rpm": RPM, "circuit": never_open},
        "brokenp": {"kind": "openai", "base_url": up, "max_concurrency": 8, "circuit": never_open},
        # Its three slots are all reserved by the sync tiers: a background drain is never admitted.
        "fullp": {"kind": "openai", "base_url": up, "max_concurrency": 3, "circuit": never_open},
    })
    config["models"].update({
        "drain": {"targets": [{"provider": "drainp", "model": "d-drain"}]},
        "live": {"targets": [{"provider": "drainp", "model": "d-live"}]},
        "broken": {"targets": [{"provider": "brokenp", "model": "b-broken"}]},
        "refused": {"targets": [{"provider": "brokenp", "model": "b-refused"}]},
        "full": {"targets": [{"provider": "fullp", "model": "f-full"}]},
    })
    config["tiers"]["brief"] = {"priority": 3, "async": True, "max_delay_s": 1.0, "timeout_s": 5,
                                "admission_timeout_s": 0.2}
    config["auth"]["clients"][1]["tiers"].append("brief")
    config["queue"] = {"namespace": ns, "mini_batch_size": 16, "mini_batch_wait_s": 0.05, "max_attempts": 2}
    return make_module_gateway(config)


def max_in_window(times: list[float], rate: float, burst: float) -> float:
    """The largest excess of requests over ``rate * T + burst`` across every window [t_i, t_j]."""
    times = sorted(times)
    worst = float("-inf")
    for i in range(len(times)):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (rate * (times[j] - times[i]) + burst))
    return worst


def test_mini_batches_stay_inside_the_envelope_and_interactive_is_served_meanwhile(gateway, upstream):
    # The upstream holds the drain's first calls until released, so the test knows the drain is mid-way.
    gate = threading.Event()
    upstream.default("d-drain", Behaviour(delay_s=0.05, gate=gate))
    try:
        with httpx.Client(timeout=10) as http, ThreadPoolExecutor(8) as pool:
            def one(i: int) -> str:
                response = http.post(gateway.url + "/v1/chat/completions", headers=headers(BATCH_KEY),
                                     json={"model": "drain", "messages": [{"role": "user", "content": f"job {i}"}]})
                assert response.status_code == 202, response.text
                return response.json()["id"]

            job_ids = list(pool.map(one, range(JOBS)))
        assert len(set(job_ids)) == JOBS
        wait_until(lambda: len(upstream.calls("d-drain")) >= DRAIN_CAP, what="the drain to fill its slots")

        # Every slot the drain may use is busy and most jobs are still queued: interactive requests on
        # the same provider are served at once all the same (the reservations are theirs).
        client = sdk(gateway, CLIENT_KEY)
        for _ in range(5):
            reply = client.chat.completions.with_raw_response.create(
                model="live", messages=[{"role": "user", "content": "now"}])
            assert reply.status_code == 200
            assert reply.headers["x-gateway-tier"] == "interactive"
            assert reply.parse().choices[0].message.content
        assert len(upstream.calls("d-drain")) == DRAIN_CAP  # the drain took no slot beyond its share
    finally:
        gate.set()

    with httpx.Client() as http:
        for job_id in job_ids:
            job = get_job(gateway, BATCH_KEY, job_id, wait=30, http=http).json()
            assert job["status"] == "succeeded", job
            assert job["via"] == "minibatch"
            ChatCompletion.model_validate(job["response"]["body"])

    drained = upstream.calls("d-drain")
    assert len(drained) == JOBS  # each job once: nothing lost, nothing run twice
    assert sorted(c.body["messages"][0]["content"] for c in drained) == sorted(f"job {i}" for i in range(JOBS))
    # Concurrency: never more than what the sync tiers' reservations leave.
    assert upstream.peak["d-drain"] == DRAIN_CAP
    # Rate: over any window T, at most RATE * T + one second of burst (small tolerance for timing jitter).
    excess = max_in_window([c.at for c in drained], RATE, RATE)
    assert excess <= 0.1 * RATE, f"{excess:.1f} requests over the envelope"


def test_job_whose_upstream_keeps_failing_is_dead_lettered(gateway, upstream, redis_server, ns):
    upstream.default("b-broken", Behaviour(status=500))
    job_id = submit_job(gateway, BATCH_KEY, "broken")
    job = wait_for(gateway, BATCH_KEY, job_id, timeout=20)
    assert job["status"] == "failed", job
    assert job["attempts"] == 2  # max_attempts
    assert job["response"] is None
    error = job["error"]
    assert error["code"] == "max_attempts"
    assert error["last_error"]["type"] == "upstream_error"  # what went wrong last time is kept
    assert "500" in error["last_error"]["message"]
    assert dead_letters(redis_server, ns).count(job_id) == 1
    # Two attempts, each a first try and one retry on the same target (the tier's ``retries: 1``).
    assert len(upstream.calls("b-broken")) == 4


def test_permanent_upstream_refusal_fails_at_once_with_the_upstream_answer(gateway, upstream, redis_server, ns):
    body = b'{"error":{"message":"bad request: no such parameter","type":"invalid_request_error","param":"x","code":null}}'
    upstream.default("b-refused", Behaviour(status=400, body=body))
    job_id = submit_job(gateway, BATCH_KEY, "refused")
    job = wait_for(gateway, BATCH_KEY, job_id)
    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert job["response"]["status_code"] == 400
    assert job["response"]["body"]["error"]["message"] == "bad request: no such parameter"
    assert len(upstream.calls("b-refused")) == 1
    assert job_id not in dead_letters(redis_server, ns)  # a permanent refusal is an answer, not a delivery failure


def test_job_past_its_deadline_ends_expired(gateway, upstream):
    job_id = submit_job(gateway, BATCH_KEY, "full", tier="brief")
    job = wait_for(gateway, BATCH_KEY, job_id, timeout=15)
    assert job["status"] == "expired", job
    assert job["error"]["code"] == "expired"
    assert job["response"] is None
    assert job["completed_at"] >= job["created_at"] + 1
    assert upstream.calls("f-full") == []
