"""Deferred execution through the HTTP surface: 202 jobs, polling, holding, cancelling, isolation.

Live gateways on free ports, the fake upstream, a real Redis and the official
``openai`` SDK. Each gateway has its own queue namespace, so no other gateway
on the shared Redis drains its jobs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import (
    get_job,
    headers,
    job_count,
    namespace,
    submit,
    submit_job,
    wait_for,
    wait_until,
)
from tests.support.redis import RedisServer
from tests.support.sdk import assert_openai_error, sdk
from tests.support.upstream import Behaviour, FakeUpstream

HOLD_S = 2.0  # the standard tier's hold


def jobs_config(upstream: FakeUpstream, redis_url: str, ns: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["queue"] = {"namespace": ns, "mini_batch_wait_s": 0.05}
    # A provider with three slots: interactive reserves two, standard one, so three slow
    # interactive calls leave the standard tier nothing and force its requests into the queue.
    config["providers"]["tight"] = {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-tight",
                                    "max_concurrency": 3, "circuit": {"failure_threshold": 50, "cooldown_s": 1.0}}
    config["models"].update({
        "jobs": {"targets": [{"provider": "primary", "model": "j-chat"}]},
        "held": {"targets": [{"provider": "tight", "model": "t-held"}]},
        "hog": {"targets": [{"provider": "tight", "model": "t-hog"}]},
    })
    config["tiers"]["interactive"].update(timeout_s=10, first_byte_timeout_s=8)
    config["tiers"]["standard"]["hold_s"] = HOLD_S
    return config


@pytest.fixture(scope="module")
def jobs_ns() -> str:
    return namespace("jobs")


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server, jobs_ns):
    """API and in-process worker."""
    return make_module_gateway(jobs_config(upstream_server, redis_server.url, jobs_ns))


@pytest.fixture(scope="module")
def api_only(make_module_gateway, upstream_server, redis_server):
    """API without a worker: its jobs stay queued."""
    config = jobs_config(upstream_server, redis_server.url, namespace("jobs-api"))
    return make_module_gateway(config, args=("--no-worker",))


def hello() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hello"}]


# -- Prefer: respond-async


def test_respond_async_via_sdk_gives_202_then_a_chat_completion(gateway, upstream):
    raw = sdk(gateway, CLIENT_KEY).chat.completions.with_raw_response.create(
        model="jobs", messages=hello(), extra_headers={"Prefer": "respond-async"}
    )
    assert raw.status_code == 202
    job = raw.http_response.json()
    assert raw.headers["location"] == f"/v1/jobs/{job['id']}"
    assert raw.headers["x-gateway-job-id"] == job["id"]
    assert raw.headers["x-gateway-tier"] == "interactive"
    assert job["object"] == "gateway.job"
    assert job["status"] == "queued"
    assert job["id"].startswith("job_") and len(job["id"]) >= 24
    assert (job["tier"], job["model"], job["attempts"], job["response"], job["error"]) == ("interactive", "jobs", 0, None, None)
    assert isinstance(job["created_at"], int) and job["completed_at"] is None

    done = wait_for(gateway, CLIENT_KEY, job["id"])
    assert done["status"] == "succeeded", done
    assert done["via"] == "minibatch"
    assert done["attempts"] == 1
    assert done["error"] is None
    assert isinstance(done["completed_at"], int) and done["completed_at"] >= done["created_at"]
    assert done["response"]["status_code"] == 200
    completion = ChatCompletion.model_validate(done["response"]["body"])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    # The drain replaced the public model name with the target's, as the sync path does.
    assert [c.body["model"] for c in upstream.calls()] == ["j-chat"]


def test_async_tier_queues_without_prefer_and_location_is_fetchable(gateway, upstream):
    # The batch client's default tier is ``background``, which has ``async: true``.
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "jobs", "messages": hello()},
                          headers=headers(BATCH_KEY), timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["tier"] == "background"
    fetched = httpx.get(gateway.url + response.headers["location"], headers=headers(BATCH_KEY), timeout=10)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == response.json()["id"]
    assert wait_for(gateway, BATCH_KEY, response.json()["id"])["status"] == "succeeded"


def test_respond_async_on_embeddings(gateway, upstream):
    response = httpx.post(gateway.url + "/v1/embeddings", json={"model": "embed", "input": ["a", "b"]},
                          headers=headers(CLIENT_KEY, Prefer="respond-async"), timeout=10)
    assert response.status_code == 202, response.text
    done = wait_for(gateway, CLIENT_KEY, response.json()["id"])
    assert done["status"] == "succeeded", done
    embeddings = CreateEmbeddingResponse.model_validate(done["response"]["body"])
    assert len(embeddings.data) == 2


def test_wait_returns_as_soon_as_the_job_is_done(gateway, upstream):
    upstream.default("j-chat", Behaviour(delay_s=0.5))
    job_id = submit_job(gateway, CLIENT_KEY, "jobs")
    started = time.monotonic()
    response = get_job(gateway, CLIENT_KEY, job_id, wait=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "succeeded", job
    assert ChatCompletion.model_validate(job["response"]["body"]).choices[0].message.content
    assert elapsed < 15, f"?wait=30 held the poll for {elapsed:.1f}s after the job was done"


def test_wait_on_a_job_that_stays_queued_returns_it_queued(api_only, upstream):
    job_id = submit_job(api_only, CLIENT_KEY, "jobs")
    started = time.monotonic()
    response = get_job(api_only, CLIENT_KEY, job_id, wait=0.5)
    assert time.monotonic() - started >= 0.45
    assert response.status_code == 200
    assert response.json()["status"] == "queued"


@pytest.mark.parametrize("wait", ["abc", "-1", "nan", "inf-ish", ""])
def test_wait_must_be_a_non_negative_number(gateway, api_only, upstream, wait):
    queued = submit_job(api_only, CLIENT_KEY, "jobs")
    finished = submit_job(gateway, CLIENT_KEY, "jobs")
    wait_for(gateway, CLIENT_KEY, finished)
    for gw, job_id in ((api_only, queued), (gateway, finished)):
        response = httpx.get(f"{gw.url}/v1/jobs/{job_id}", params={"wait": wait}, headers=headers(CLIENT_KEY),
                             timeout=10)
        assert_openai_error(response, 400, code="invalid_request")


# -- holding the connection (deferrable tier, no opt-in)


class Hogs:
    """Interactive calls that hold every slot of the ``tight`` provider until released."""

    def __init__(self, gw: Any, upstream: FakeUpstream, count: int = 3) -> None:
        self.gate = threading.Event()
        upstream.default("t-hog", Behaviour(gate=self.gate))
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._call, args=(gw,)) for _ in range(count)]
        for t in self.threads:
            t.start()
        wait_until(lambda: len(upstream.calls("t-hog")) >= count, what="the slot-holding calls to reach the upstream")

    def _call(self, gw: Any) -> None:
        response = httpx.post(gw.url + "/v1/chat/completions", json={"model": "hog", "messages": hello()},
                              headers=headers(CLIENT_KEY), timeout=60)
        self.statuses.append(response.status_code)

    def release(self) -> list[int]:
        self.gate.set()
        for t in self.threads:
            t.join(30)
        return self.statuses

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def in_background(fn: Any) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def standard() -> dict[str, str]:
    return {"X-Gateway-Tier": "standard"}


def test_saturated_deferrable_request_held_and_answered_200(gateway, upstream, redis_server, jobs_ns):
    with Hogs(gateway, upstream) as hogs:
        before = job_count(redis_server, jobs_ns)
        call = in_background(lambda: sdk(gateway, CLIENT_KEY).chat.completions.with_raw_response.create(
            model="held", messages=hello(), extra_headers=standard()))
        wait_until(lambda: job_count(redis_server, jobs_ns) > before, what="the saturated request to be queued")
        assert hogs.release() == [200, 200, 200]  # the slots free up while the client is still held
        raw = call.result(timeout=30)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-deferred"] == "true"
    assert raw.headers["x-gateway-tier"] == "standard"
    assert raw.headers["x-gateway-target"] == "tight/t-held"
    assert raw.headers["x-gateway-job-id"].startswith("job_")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    # The job behind the held answer is on record too.
    job = wait_for(gateway, CLIENT_KEY, raw.headers["x-gateway-job-id"])
    assert job["status"] == "succeeded"
    assert len(upstream.calls("t-held")) == 1


def test_held_request_that_outlasts_hold_gets_503_with_job_and_job_later_succeeds(gateway, upstream, redis_server,
                                                                                  jobs_ns):
    before = job_count(redis_server, jobs_ns)
    with Hogs(gateway, upstream) as hogs:
        # The SDK's default retries: it must not send the request again (the work is already queued).
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(gateway, CLIENT_KEY, max_retries=2).chat.completions.create(
                model="held", messages=hello(), extra_headers=standard())
        response = caught.value.response
        error = assert_openai_error(response, 503, type_="server_error", code="request_deferred")
        job_id = error["job_id"]
        assert response.headers["x-gateway-job-id"] == job_id
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-should-retry"] == "false"
        assert job_count(redis_server, jobs_ns) == before + 1  # one request, one job
        assert upstream.calls("t-held") == []  # the slots were all held: nothing was sent yet
        assert get_job(gateway, CLIENT_KEY, job_id).json()["status"] in ("queued", "running")
        assert hogs.release() == [200, 200, 200]
    job = wait_for(gateway, CLIENT_KEY, job_id)
    assert job["status"] == "succeeded", job
    assert ChatCompletion.model_validate(job["response"]["body"]).choices[0].message.content


@pytest.mark.parametrize("include_usage", [False, True])
def test_deferred_stream_is_replayed_as_a_complete_sse_stream(gateway, upstream, redis_server, jobs_ns, include_usage):
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with Hogs(gateway, upstream) as hogs:
        before = job_count(redis_server, jobs_ns)
        call = in_background(lambda: sdk(gateway, CLIENT_KEY).chat.completions.with_raw_response.create(
            model="held", messages=hello(), stream=True, extra_headers=standard(), **extra))
        wait_until(lambda: job_count(redis_server, jobs_ns) > before, what="the saturated request to be queued")
        hogs.release()
        raw = call.result(timeout=30)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-deferred"] == "true"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(["word"] * 5)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 5
    else:
        # A client that did not ask for the usage chunk must not get one (``choices: []`` breaks choices[0]).
        assert all(c.choices for c in chunks), [c.model_dump() for c in chunks]
    # The drain asked upstream for a plain (non-streaming) completion.
    assert [c.body.get("stream") for c in upstream.calls("t-held")] == [None]


def test_non_deferrable_tier_is_refused_when_saturated_not_queued(gateway, upstream):
    with Hogs(gateway, upstream):
        response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "held", "messages": hello()},
                              headers=headers(CLIENT_KEY), timeout=10)
        assert_openai_error(response, 429, code="gateway_saturated")
        assert "x-gateway-job-id" not in response.headers


# -- cancel and isolation


def test_cancel_a_queued_job(api_only, upstream):
    job_id = submit_job(api_only, CLIENT_KEY, "jobs")
    response = httpx.delete(f"{api_only.url}/v1/jobs/{job_id}", headers=headers(CLIENT_KEY), timeout=10)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "cancelled"
    assert isinstance(job["completed_at"], int)
    assert get_job(api_only, CLIENT_KEY, job_id).json() == job
    # Cancelling again is idempotent: same answer, nothing changes.
    again = httpx.delete(f"{api_only.url}/v1/jobs/{job_id}", headers=headers(CLIENT_KEY), timeout=10)
    assert again.status_code == 200
    assert again.json() == job


def test_cancel_a_finished_job_is_a_conflict(gateway, upstream):
    job_id = submit_job(gateway, CLIENT_KEY, "jobs")
    assert wait_for(gateway, CLIENT_KEY, job_id)["status"] == "succeeded"
    response = httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers=headers(CLIENT_KEY), timeout=10)
    assert_openai_error(response, 409, code="job_not_cancellable")
    assert get_job(gateway, CLIENT_KEY, job_id).json()["status"] == "succeeded"


def test_another_clients_job_is_not_found(api_only, upstream):
    job_id = submit_job(api_only, BATCH_KEY, "jobs", tier="standard")
    for method in ("GET", "DELETE"):
        theirs = httpx.request(method, f"{api_only.url}/v1/jobs/{job_id}", headers=headers(CLIENT_KEY), timeout=10)
        missing = httpx.request(method, f"{api_only.url}/v1/jobs/job_doesnotexist0000000000",
                                headers=headers(CLIENT_KEY), timeout=10)
        assert_openai_error(theirs, 404, code="job_not_found")
        assert theirs.json() == missing.json()  # indistinguishable from a job that does not exist
    mine = get_job(api_only, BATCH_KEY, job_id)
    assert mine.status_code == 200
    assert mine.json()["status"] == "queued"  # the other client's DELETE did not cancel it


def test_jobs_api_needs_a_key(api_only, upstream):
    job_id = submit_job(api_only, CLIENT_KEY, "jobs")
    response = httpx.get(f"{api_only.url}/v1/jobs/{job_id}", timeout=10)
    assert_openai_error(response, 401)
    response = httpx.get(f"{api_only.url}/v1/jobs/{job_id}", headers=headers("sk-wrong"), timeout=10)
    assert_openai_error(response, 401)


# -- Redis unreachable


def test_redis_unreachable_queued_paths_503_sync_keeps_working(make_gateway, upstream, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = jobs_config(upstream, redis.url, namespace("down"))
        gw = make_gateway(config)
        assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200
        queued = submit_job(gw, CLIENT_KEY, "jobs")
        assert wait_for(gw, CLIENT_KEY, queued)["status"] == "succeeded"

        redis.stop()
        wait_until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 503, what="/readyz to say 503")
        ready = httpx.get(gw.url + "/readyz", timeout=5).json()
        assert ready["redis"] == "unreachable"

        # Interactive sync traffic does not touch Redis.
        client = sdk(gw, CLIENT_KEY)
        for _ in range(3):
            assert client.chat.completions.create(model="jobs", messages=hello()).choices[0].message.content
        # Everything that would be queued is refused loudly, never dropped silently.
        assert_openai_error(submit(gw, CLIENT_KEY, "jobs"), 503, code="queue_unavailable")
        async_tier = httpx.post(gw.url + "/v1/chat/completions", json={"model": "jobs", "messages": hello()},
                                headers=headers(BATCH_KEY), timeout=10)
        assert_openai_error(async_tier, 503, code="queue_unavailable")
        with Hogs(gw, upstream):
            held = httpx.post(gw.url + "/v1/chat/completions", json={"model": "held", "messages": hello()},
                              headers=headers(CLIENT_KEY, **standard()), timeout=10)
            assert_openai_error(held, 503, code="queue_unavailable")
        assert_openai_error(get_job(gw, CLIENT_KEY, queued), 503, code="queue_unavailable")

        # Once Redis is back, so is deferral.
        redis.start()
        wait_until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, what="/readyz to recover")
        job_id = submit_job(gw, CLIENT_KEY, "jobs")
        assert wait_for(gw, CLIENT_KEY, job_id)["status"] == "succeeded"
    finally:
        redis.stop()
