"""Client batches: the pure parts as tables, and the sweep against a live gateway that runs no worker.

With ``--no-worker`` nothing drains the queue, so a test plays the worker itself
through a real ``QueueStore``: it completes jobs without the gateway's job hook
ever running, which is exactly what the sweep must catch.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.auth import Client
from gateway.queue.batch_input import BatchRequest, LineError, parse_line, validate
from gateway.queue.client_batch import BatchStatus, batch_job_id, batch_tier, leftover_line, result_line
from gateway.queue.job import JobStatus, Via
from gateway.queue.keys import Keys
from gateway.queue.store import Outcome, QueueStore
from tests.conftest import BATCH_KEY, base_config
from tests.support.gateway_proc import GatewayProcess
from tests.support.jobs import namespace
from tests.support.sdk import sdk

CHAT = "/v1/chat/completions"
MODELS = frozenset({"chat", "embed"})
HASTY_KEY = "sk-test-hasty"


def raw(custom_id: Any = "a", model: Any = "chat", url: Any = CHAT, method: Any = "POST", **extra: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": method, "url": url,
                         "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}, **extra})


# -- one line ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "code", "param"),
    [
        (b"{not json", "invalid_json_line", None),
        (b"[1, 2]", "invalid_json_line", None),
        (raw(custom_id=""), "missing_required_parameter", "custom_id"),
        (raw(custom_id=7), "missing_required_parameter", "custom_id"),
        (raw(method="GET"), "invalid_method", "method"),
        (raw(method=None), "invalid_method", "method"),
        (raw(url="/v1/embeddings"), "url_mismatch", "url"),
        (raw(url="/chat/completions"), "url_mismatch", "url"),
        (orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": "x"}), "missing_required_parameter", "body"),
        (raw(model=None), "missing_required_parameter", "body.model"),
        (raw(model="gpt-9"), "model_not_found", "body.model"),
        # What the HTTP path refuses in a body, a line may not carry in either.
        (orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "chat", "messages": []}}),
         "invalid_value", "body.messages"),
        (orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT,
                       "body": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}}),
         "invalid_value", "body.max_tokens"),
    ],
)
def test_a_bad_line_says_what_is_wrong(line: bytes, code: str, param: str | None) -> None:
    error = parse_line(line, 7, CHAT, MODELS)
    assert isinstance(error, LineError)
    assert (error.code, error.param, error.line) == (code, param, 7)
    assert error.message


def test_a_good_line_keeps_its_body_and_unknown_fields() -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "x_vendor": {"keep": True}}
    line = orjson.dumps({"custom_id": "q1", "method": "POST", "url": CHAT, "body": body})
    parsed = parse_line(line + b"\r\n", 3, CHAT, MODELS)
    assert isinstance(parsed, BatchRequest)
    assert (parsed.line, parsed.custom_id, parsed.model) == (3, "q1", "chat")
    assert orjson.loads(parsed.body) == body
    assert parse_line(b"  \r\n", 4, CHAT, MODELS) is None


# -- a whole file --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("lines", "requests", "errors"),
    [
        ([raw("a"), raw("b")], 2, []),
        ([raw("a"), b"", b"   ", raw("b")], 2, []),  # blank lines are skipped, numbering is not
        ([raw("a"), raw("a")], 2, [(2, "duplicate_custom_id")]),
        ([raw("a"), b"{", raw("b", url="/v1/completions"), raw("a")], 2,
         [(2, "invalid_json_line"), (3, "url_mismatch"), (4, "duplicate_custom_id")]),
        ([raw("a"), raw("b", model="embed")], 2, []),  # models may mix
        ([], 0, [(None, "empty_file")]),
        ([b"", b"\n"], 0, [(None, "empty_file")]),
        ([b"{"], 0, [(1, "invalid_json_line")]),
        ([raw(str(i)) for i in range(4)], 4, [(None, "too_many_tasks")]),
    ],
    ids=["valid", "blank-lines", "duplicate", "several", "two-models", "empty", "only-blank", "only-broken", "too-many"],
)
def test_validation_of_a_file(lines: list[bytes], requests: int, errors: list[tuple[int | None, str]]) -> None:
    result = validate(lines, CHAT, MODELS, max_requests=3)
    assert result.requests == requests
    assert [(e.line, e.code) for e in result.errors] == errors
    assert result.ok is (not errors)


def test_validation_reports_a_bounded_number_of_errors() -> None:
    result = validate([b"nope"] * 500, CHAT, MODELS)
    assert len(result.errors) == 100 and result.errors[-1].line == 100


def test_an_error_renders_as_openai_does() -> None:
    assert LineError("url_mismatch", "m", 4, "url").to_object() == {"code": "url_mismatch", "message": "m",
                                                                    "param": "url", "line": 4}


# -- tiers, ids, lines ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tiers", "default", "configured", "expected"),
    [
        ({"standard", "background"}, "standard", None, "background"),
        ({"interactive", "standard"}, "interactive", None, "interactive"),
        ({"standard", "background", "bulk"}, "standard", "bulk", "bulk"),
        ({"standard"}, "standard", "standard", "standard"),
    ],
)
def test_the_tier_of_batch_lines(tiers: set[str], default: str, configured: str | None, expected: str) -> None:
    assert batch_tier(Client("c", frozenset(tiers), default), configured) == expected


def test_line_job_ids_are_stable_and_distinct() -> None:
    ids = {batch_job_id("batch_x", i) for i in range(1000)}
    assert len(ids) == 1000 and batch_job_id("batch_x", 5) == batch_job_id("batch_x", 5)
    assert batch_job_id("batch_x", 0) != batch_job_id("batch_y", 0)
    assert all(i.startswith("job_") for i in ids)


@pytest.mark.parametrize(
    ("status", "response_status", "body", "error", "kind", "code"),
    [
        (JobStatus.SUCCEEDED, 200, b'{"ok": true}', None, "completed", None),
        (JobStatus.FAILED, 400, b'{"error": {"message": "bad tool", "code": "invalid_tools"}}',
         {"code": "internal_error", "message": "x"}, "failed", "invalid_tools"),
        (JobStatus.FAILED, 422, b'{"error": {"message": "nope", "code": null}}', None, "failed", "request_failed"),
        (JobStatus.FAILED, None, None, {"code": "max_attempts", "message": "failed 5 times"}, "failed", "max_attempts"),
        (JobStatus.EXPIRED, None, None, {"code": "expired", "message": "late"}, "failed", "batch_expired"),
        (JobStatus.CANCELLED, None, None, None, "none", "request_cancelled"),
    ],
)
def test_result_lines(status: JobStatus, response_status: int | None, body: bytes | None,
                      error: dict[str, Any] | None, kind: str, code: str | None) -> None:
    got_kind, line = result_line("job_abc", "c1", status, response_status, body, error)
    obj = orjson.loads(line)
    assert got_kind == kind
    assert (obj["id"], obj["custom_id"]) == ("batch_req_abc", "c1")
    if response_status is None:
        assert obj["response"] is None
    else:
        assert obj["response"] == {"status_code": response_status, "request_id": "job_abc", "body": orjson.loads(body)}
    assert (obj["error"] or {}).get("code") == code
    if code:
        assert obj["error"]["message"]


def test_leftover_lines_name_why_the_request_never_ran() -> None:
    codes = {s: orjson.loads(leftover_line("job_q", "c", s))["error"]["code"]
             for s in (BatchStatus.CANCELLED, BatchStatus.EXPIRED, BatchStatus.COMPLETED)}
    assert codes == {BatchStatus.CANCELLED: "batch_cancelled", BatchStatus.EXPIRED: "batch_expired",
                     BatchStatus.COMPLETED: "result_unavailable"}
    assert orjson.loads(leftover_line("job_q", "c", BatchStatus.CANCELLED))["response"] is None


# -- the sweep, against a gateway with no worker ---------------------------------------------------

@dataclass
class Idle:
    """A gateway that serves the API but drains nothing, and what a stand-in worker needs to know."""

    url: str
    redis_url: str
    namespace: str
    tiers: list[str]


@pytest.fixture(scope="module")
def idle_gateway(make_module_gateway, upstream_server, redis_server) -> Idle:
    config = base_config(upstream_server, redis_server.url)
    config["queue"] = {"namespace": namespace("cb")}
    config["files"] = {"sweep_s": 0.2}
    config["tiers"]["brief"] = {"priority": 3, "async": True, "max_delay_s": 1.0}
    config["auth"]["clients"].append({"name": "hasty", "key": HASTY_KEY, "tiers": ["brief"], "default_tier": "brief"})
    gw = make_module_gateway(config, args=("--no-worker",))
    return Idle(gw.url, redis_server.url, config["queue"]["namespace"], list(config["tiers"]))


@pytest.fixture
def clients(idle_gateway: Idle) -> Any:
    """SDK clients for the idle gateway, by key; closed after the test."""
    made: list[Any] = []

    def make(key: str) -> Any:
        made.append(sdk(idle_gateway, key))
        return made[-1]

    yield make
    for c in made:
        c.close()


def start_batch(client: Any, custom_ids: list[str]) -> Any:
    content = b"".join(raw(c) + b"\n" for c in custom_ids)
    f = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    wait(client, batch.id, {"in_progress"})
    return batch


def wait(client: Any, batch_id: str, until: set[str], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} is still {batch.status}")


def lines_of(client: Any, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    return {(o := json.loads(r))["custom_id"]: o for r in client.files.content(file_id).text.splitlines()}


async def play_worker(gw: Idle, outcomes: dict[str, Outcome]) -> None:
    """Take the batch's jobs off the queue and complete them, as a worker that dies before its hooks would."""
    r = aioredis.Redis.from_url(gw.redis_url)
    store = QueueStore(r, Keys(gw.namespace), gw.tiers, result_ttl_s=3600, consumer="test-worker")
    try:
        pending = set(outcomes)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for entry in await store.fetch(10, 200):
                if entry.job_id not in pending:
                    continue  # another line: left queued
                job = await store.claim(entry)
                assert job is not None
                await store.complete(job, entry, outcomes[job.id])
                pending.discard(job.id)
        assert not pending
    finally:
        await r.aclose()


def test_the_sweep_settles_lines_whose_hook_never_ran(idle_gateway: Idle, clients: Any) -> None:
    client = clients(BATCH_KEY)
    batch = start_batch(client, ["ok", "boom", "dropped"])
    ok, boom, dropped = (batch_job_id(batch.id, i) for i in range(3))
    # The client cancels one line's job directly: that path runs no hook either.
    response = httpx.delete(f"{idle_gateway.url}/v1/jobs/{dropped}", headers={"Authorization": f"Bearer {BATCH_KEY}"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    asyncio.run(play_worker(idle_gateway, {
        ok: Outcome(JobStatus.SUCCEEDED, Via.MINIBATCH, 200, b'{"answer": 42}'),
        boom: Outcome(JobStatus.FAILED, Via.MINIBATCH, error={"code": "max_attempts", "message": "failed 5 times"}),
    }))
    done = wait(client, batch.id, {"completed"})
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 1, 1)
    out, err = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert out["ok"]["response"]["body"] == {"answer": 42}
    assert err["boom"]["error"]["code"] == "max_attempts"
    assert err["dropped"]["error"]["code"] == "request_cancelled"
    assert set(out) | set(err) == {"ok", "boom", "dropped"}


def test_cancelling_a_queued_batch_cancels_every_line(idle_gateway: Idle, clients: Any) -> None:
    client = clients(BATCH_KEY)
    batch = start_batch(client, [f"c{i}" for i in range(6)])
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait(client, batch.id, {"cancelled"})
    assert done.output_file_id is None
    err = lines_of(client, done.error_file_id)
    assert sorted(err) == [f"c{i}" for i in range(6)]
    assert {e["error"]["code"] for e in err.values()} == {"batch_cancelled"}
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 0, 0)
    job = httpx.get(f"{idle_gateway.url}/v1/jobs/{batch_job_id(batch.id, 0)}",
                    headers={"Authorization": f"Bearer {BATCH_KEY}"}).json()
    assert job["status"] == "cancelled"
    assert client.batches.cancel(batch.id).status == "cancelled"  # idempotent once cancelled


def test_a_batch_whose_window_passes_expires_with_what_finished(idle_gateway: Idle, clients: Any) -> None:
    client = clients(HASTY_KEY)
    batch = start_batch(client, ["early", "late-1", "late-2"])
    asyncio.run(play_worker(idle_gateway, {
        batch_job_id(batch.id, 0): Outcome(JobStatus.SUCCEEDED, Via.MINIBATCH, 200, b'{"n": 1}'),
    }))
    done = wait(client, batch.id, {"expired"})
    assert done.expired_at is not None and done.expired_at >= done.expires_at
    assert list(lines_of(client, done.output_file_id)) == ["early"]
    err = lines_of(client, done.error_file_id)
    assert sorted(err) == ["late-1", "late-2"] and {e["error"]["code"] for e in err.values()} == {"batch_expired"}
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)


# -- lines served by a provider batch ------------------------------------------------------------

def test_batch_lines_may_be_served_by_a_provider_batch(tmp_path, make_gateway, redis_server) -> None:
    # The project's simulator implements OpenAI files and batches; three lines make one upstream batch.
    sim = GatewayProcess(tmp_path, None, command="simulator", args=("--latency-ms", "1")).start(wait="/v1/models")
    try:
        httpx.put(sim.url + "/_sim/behaviour", json={"batch_latency_ms": 200}, timeout=5).raise_for_status()
        gw = make_gateway({
            "server": {"log_format": "json"},
            "redis": {"url": redis_server.url, "private": "never"},
            "auth": {"clients": [{"name": "batch", "key": BATCH_KEY, "tiers": ["background"],
                                  "default_tier": "background"}]},
            "providers": {"up": {"kind": "openai", "base_url": sim.url + "/v1", "api_key": "sk-sim", "batch": True,
                                 "batch_window_s": 600}},
            "models": {"chat": {"targets": [{"provider": "up", "model": "sim-1"}]}},
            "tiers": {"background": {"priority": 2, "async": True, "max_delay_s": 3600, "provider_batch": True}},
            "queue": {"namespace": namespace("cbp"), "provider_batch_min_items": 3, "provider_batch_poll_s": 0.2,
                      "mini_batch_wait_s": 0.05},
            "files": {"sweep_s": 0.5},
        })
        with sdk(gw, BATCH_KEY) as client:
            content = b"".join(raw(f"p{i}") + b"\n" for i in range(3))
            f = client.files.create(file=("in.jsonl", content), purpose="batch")
            batch = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
            done = wait(client, batch.id, {"completed", "failed", "expired", "cancelled"}, timeout=20)
            assert done.status == "completed" and done.request_counts.completed == 3
            out = lines_of(client, done.output_file_id)
            assert sorted(out) == ["p0", "p1", "p2"]
            for line in out.values():
                job = httpx.get(f"{gw.url}/v1/jobs/{line['response']['request_id']}",
                                headers={"Authorization": f"Bearer {BATCH_KEY}"}).json()
                assert job["via"] == "provider_batch"
                assert line["response"]["body"]["object"] == "chat.completion"
            assert httpx.get(sim.url + "/_sim/batches").json()["submissions"] == 1
    finally:
        sim.stop()
