"""Provider batches: queued background jobs packed into the simulator's OpenAI Batch API.

The upstream is the project's own ``gateway simulator`` (a real process on a
free port), which implements OpenAI files and batches; the gateway talks to it
as a provider of kind ``openai``.
"""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.config import ProviderConfig, QueueConfig, TierConfig
from gateway.providers.base import BatchResult, BatchState
from gateway.queue.batcher import due, fits_window, wants_provider_batch
from gateway.queue.job import Job, JobStatus, Via
from gateway.queue.poller import next_interval_s, settle
from tests.conftest import BATCH_KEY
from tests.support.gateway_proc import GatewayProcess


def job(created: float = 0.0, deadline: float = 100_000.0, **kw) -> Job:
    return Job(id="job_x", client="c", tier="background", model="m", route=kw.pop("route", "chat/completions"),
               body=b"{}", created_at=created, deadline=deadline, **kw)


TIER = TierConfig(priority=2, provider_batch=True)
PROVIDER = ProviderConfig(kind="openai", base_url="http://x/v1", batch=True, batch_window_s=1000)


@pytest.mark.parametrize(
    "j, tier, provider, now, expected",
    [
        (job(), TIER, PROVIDER, 10.0, True),
        (job(), TierConfig(priority=2), PROVIDER, 10.0, False),  # tier does not batch
        (job(), TIER, PROVIDER.model_copy(update={"batch": False}), 10.0, False),  # provider has no batch API
        (job(realtime_only=True), TIER, PROVIDER, 10.0, False),  # came back from a failed batch
        (job(stream=True), TIER, PROVIDER, 10.0, False),  # someone may be holding the connection
        (job(deadline=999.0), TIER, PROVIDER, 0.0, False),  # max delay shorter than the window
        (job(deadline=1000.0), TIER, PROVIDER, 0.0, True),  # exactly the window
        (job(deadline=1000.0), TIER, PROVIDER, 600.0, False),  # less than half the window left
        (job(route="embeddings"), TIER, PROVIDER, 10.0, True),
        (job(), TIER, ProviderConfig(kind="anthropic", base_url="http://x", batch=True, batch_window_s=1000), 1.0, True),
        (job(route="embeddings"), TIER, ProviderConfig(kind="anthropic", base_url="http://x", batch=True), 1.0, False),
    ],
)
def test_wants_provider_batch(j, tier, provider, now, expected):
    assert wants_provider_batch(j, tier, provider, now) is expected


@pytest.mark.parametrize(
    "count, age, expected",
    [(0, 10_000.0, False), (99, 10.0, False), (100, 0.0, True), (1, 599.9, False), (1, 600.0, True)],
)
def test_due(count, age, expected):
    assert due(count, age, QueueConfig()) is expected


def test_fits_window_needs_both_length_and_time_left():
    assert fits_window(job(created=0, deadline=2000), 1000, 1000) is True
    assert fits_window(job(created=0, deadline=2000), 1000, 1501) is False


@pytest.mark.parametrize("polls, expected", [(0, 30.0), (1, 45.0), (2, 67.5), (30, 600.0)])
def test_next_interval_backs_off_to_a_cap(polls, expected):
    assert next_interval_s(30.0, polls) == pytest.approx(expected)


OK = BatchResult("job_x", 200, b'{"ok":1}')


@pytest.mark.parametrize(
    "result, state, now, status",
    [
        (OK, BatchState.COMPLETED, 0.0, JobStatus.SUCCEEDED),
        (BatchResult("job_x", 400, b"{}", {"message": "bad"}), BatchState.COMPLETED, 0.0, JobStatus.FAILED),
        (BatchResult("job_x", 500, b"{}", {"message": "boom"}), BatchState.COMPLETED, 0.0, None),  # retry realtime
        (BatchResult("job_x", 429, b"{}"), BatchState.COMPLETED, 0.0, None),
        (None, BatchState.EXPIRED, 0.0, None),  # the batch ran out of time: realtime while the deadline allows
        (None, BatchState.EXPIRED, 200_000.0, JobStatus.EXPIRED),
        (None, BatchState.CANCELLED, 200_000.0, JobStatus.EXPIRED),
        (None, BatchState.FAILED, 0.0, None),  # batch-level failure goes back to mini-batches
        (None, BatchState.FAILED, 200_000.0, JobStatus.FAILED),
        (BatchResult("job_x", 500, b"{}"), BatchState.COMPLETED, 200_000.0, JobStatus.FAILED),
    ],
)
def test_settle(result, state, now, status):
    outcome = settle(job(), result, state, now)
    if status is None:
        assert outcome is None
    else:
        assert outcome is not None and outcome.status is status and outcome.via is Via.PROVIDER_BATCH


# -- end to end


@pytest.fixture
def simulator(tmp_path):
    procs = []

    def start(*args: str) -> GatewayProcess:
        proc = GatewayProcess(tmp_path, None, command="simulator", args=args).start(wait="/v1/models")
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()


def behave(sim: GatewayProcess, **changes) -> None:
    httpx.put(sim.url + "/_sim/behaviour", json=changes, timeout=5).raise_for_status()


def batch_config(sim_url: str, redis_url: str, min_items: int = 100, max_wait: float = 30.0) -> dict:
    return {
        "server": {"log_format": "json"},
        "redis": {"url": redis_url, "private": "never"},
        "auth": {"clients": [{"name": "batch", "key": BATCH_KEY, "tiers": ["interactive", "background"],
                              "default_tier": "background"}]},
        "providers": {"up": {"kind": "openai", "base_url": sim_url + "/v1", "api_key": "sk-sim", "batch": True,
                             "batch_window_s": 600, "max_concurrency": 8}},
        "models": {"m": {"targets": [{"provider": "up", "model": "sim-1"}],
                         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "batch_discount": 0.5}}},
        "tiers": {"interactive": {"priority": 0, "reserved_concurrency": 1},
                  "background": {"priority": 2, "async": True, "max_delay_s": 3600, "provider_batch": True,
                                 "retries": 2}},
        "queue": {"provider_batch_min_items": min_items, "provider_batch_max_wait_s": max_wait,
                  "provider_batch_poll_s": 0.3, "mini_batch_wait_s": 0.05},
    }


def submit(gw: GatewayProcess, n: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {BATCH_KEY}"}, timeout=10) as c:
        for i in range(n):
            r = c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": f"q{i} " * 8}]})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
    return ids


def wait_all(gw: GatewayProcess, ids: list[str], timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    out = []
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {BATCH_KEY}"}, timeout=20) as c:
        for job_id in ids:
            while True:
                j = c.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
                if j["status"] in ("succeeded", "failed", "expired", "cancelled") or time.monotonic() > deadline:
                    break
            out.append(j)
    return out


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_hundred_background_jobs_become_one_upstream_batch_at_batch_prices(simulator, make_gateway, redis_server):
    sim = simulator("--latency-ms", "1", "--seed", "1")
    behave(sim, batch_latency_ms=300)
    gw = make_gateway(batch_config(sim.url, redis_server.url, min_items=100))
    ids = submit(gw, 100)
    jobs = wait_all(gw, ids)
    assert [j["status"] for j in jobs] == ["succeeded"] * 100
    assert {j["via"] for j in jobs} == {"provider_batch"}
    assert httpx.get(sim.url + "/_sim/batches").json()["submissions"] == 1
    for j in jobs:
        assert j["response"]["body"]["object"] == "chat.completion"
    # Cost at batch prices: half of (input * $1 + output * $2) per million tokens.
    prompt = sum(j["response"]["body"]["usage"]["prompt_tokens"] for j in jobs)
    completion = sum(j["response"]["body"]["usage"]["completion_tokens"] for j in jobs)
    expected = (prompt * 1.0 + completion * 2.0) / 1e6 * 0.5
    assert metric(gw, "gateway_cost_usd_total", pricing="batch") == pytest.approx(expected)
    assert metric(gw, "gateway_cost_usd_total", pricing="realtime") == 0.0
    assert metric(gw, "gateway_jobs_total", via="provider_batch", status="succeeded") == 100


def test_the_poller_resumes_after_a_gateway_restart(simulator, make_gateway, redis_server):
    sim = simulator("--latency-ms", "1")
    behave(sim, batch_latency_ms=2500)
    cfg = batch_config(sim.url, redis_server.url, min_items=5)
    cfg["queue"]["namespace"] = "restart"
    first = make_gateway(cfg)
    ids = submit(first, 5)
    deadline = time.monotonic() + 10
    while httpx.get(sim.url + "/_sim/batches").json()["submissions"] < 1:
        assert time.monotonic() < deadline, "no batch was submitted"
        time.sleep(0.1)
    first.stop()  # the batch is in flight upstream, recorded only in Redis
    second = make_gateway(cfg)
    jobs = wait_all(second, ids)
    assert [j["status"] for j in jobs] == ["succeeded"] * 5
    assert {j["via"] for j in jobs} == {"provider_batch"}
    assert httpx.get(sim.url + "/_sim/batches").json()["submissions"] == 1


def test_failed_items_and_a_lost_batch_still_bring_every_job_to_an_end(simulator, make_gateway, redis_server):
    sim = simulator("--latency-ms", "1", "--seed", "7")
    behave(sim, batch_latency_ms=200, error_ratio=0.3)
    cfg = batch_config(sim.url, redis_server.url, min_items=20)
    cfg["queue"]["namespace"] = "partial"
    cfg["queue"]["max_attempts"] = 10
    gw = make_gateway(cfg)
    ids = submit(gw, 20)
    jobs = wait_all(gw, ids)
    assert [j["status"] for j in jobs] == ["succeeded"] * 20
    vias = {j["via"] for j in jobs}
    # Lines that drew a 500 in the batch were retried on the realtime path.
    assert vias == {"provider_batch", "minibatch"}


def test_a_batch_the_provider_forgot_goes_back_to_realtime(simulator, make_gateway, redis_server, tmp_path):
    sim = simulator("--latency-ms", "1")
    behave(sim, batch_latency_ms=60_000)
    cfg = batch_config(sim.url, redis_server.url, min_items=3)
    cfg["queue"]["namespace"] = "forgot"
    gw = make_gateway(cfg)
    ids = submit(gw, 3)
    deadline = time.monotonic() + 10
    while httpx.get(sim.url + "/_sim/batches").json()["submissions"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Restart the simulator on the same port: it no longer knows the batch (404 on poll).
    port = sim.port
    sim.stop()
    again = GatewayProcess(tmp_path, None, command="simulator", args=("--latency-ms", "1"))
    again.port, again.url = port, f"http://127.0.0.1:{port}"
    again.start(wait="/v1/models")
    try:
        jobs = wait_all(gw, ids)
    finally:
        again.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 3
    assert {j["via"] for j in jobs} == {"minibatch"}


def test_jobs_whose_deadline_is_too_short_take_the_minibatch_way(simulator, make_gateway, redis_server):
    sim = simulator("--latency-ms", "1")
    cfg = batch_config(sim.url, redis_server.url, min_items=1)
    cfg["queue"]["namespace"] = "short"
    cfg["tiers"]["background"]["max_delay_s"] = 60  # shorter than the provider's 600 s window
    gw = make_gateway(cfg)
    jobs = wait_all(gw, submit(gw, 3))
    assert [(j["status"], j["via"]) for j in jobs] == [("succeeded", "minibatch")] * 3
    assert httpx.get(sim.url + "/_sim/batches").json()["submissions"] == 0
