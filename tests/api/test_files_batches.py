"""The Files and Batch APIs through the official SDK against a live gateway, a real Redis and a fake upstream.

One gateway serves the module. Its batch lines go to the ``background`` tier
and are drained through the router to the fake upstream; each test scripts the
upstream models it uses.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import namespace
from tests.support.sdk import assert_openai_error, sdk
from tests.support.upstream import Behaviour, FakeUpstream

MAX_BYTES = 64 * 1024
OTHER_KEY = "sk-test-other"
LISTER_KEY = "sk-test-lister"
HASTY_KEY = "sk-test-hasty"
CHAT = "/v1/chat/completions"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def batch_config(upstream: FakeUpstream, redis_url: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["queue"] = {"namespace": namespace("fb"), "mini_batch_size": 4, "mini_batch_wait_s": 0.05}
    config["files"] = {"max_bytes": MAX_BYTES, "sweep_s": 0.3}
    config["server"]["body_timeout_s"] = 1.0
    config["models"].update({
        name: {"targets": [{"provider": "primary", "model": f"p-{name}"}]} for name in ("chat-b", "bad", "slow", "stuck")
    })
    # A tier whose lines may wait only two seconds: batches in it expire quickly.
    config["tiers"]["brief"] = {"priority": 3, "async": True, "max_delay_s": 2.0, "timeout_s": 10}
    config["auth"]["clients"] += [
        {"name": "other", "key": OTHER_KEY, "tiers": ["background"], "default_tier": "background"},
        {"name": "lister", "key": LISTER_KEY, "tiers": ["background"], "default_tier": "background"},
        {"name": "hasty", "key": HASTY_KEY, "tiers": ["standard", "brief"], "default_tier": "standard",
         "batch_tier": "brief"},
    ]
    return config


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(batch_config(upstream_server, redis_server.url))


@pytest.fixture
def clients(gateway):
    """SDK clients for the module's gateway, by key; closed after the test."""
    made: list[openai.OpenAI] = []

    def make(key: str) -> openai.OpenAI:
        made.append(sdk(gateway, key))
        return made[-1]

    yield make
    for c in made:
        c.close()


def line(custom_id: str, model: str = "chat", url: str = CHAT, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}]}
    if url == "/v1/embeddings":
        body = {"model": model, "input": custom_id}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}


def jsonl(*items: Any) -> bytes:
    return b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in items)


def upload(client: openai.OpenAI, content: bytes, name: str = "input.jsonl", **kwargs: Any) -> Any:
    return client.files.create(file=(name, content), purpose="batch", **kwargs)


def run_batch(client: openai.OpenAI, content: bytes, endpoint: str = CHAT, **kwargs: Any) -> Any:
    f = upload(client, content)
    return client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h", **kwargs)  # type: ignore[arg-type]


def wait_batch(client: openai.OpenAI, batch_id: str, until: frozenset[str] = FINAL, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    batch = None
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not reach {sorted(until)} in {timeout}s: {batch}")


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(raw) for raw in client.files.content(file_id).text.splitlines() if raw.strip()]


def test_a_batch_runs_to_completion_and_its_output_matches_the_input(gateway, clients, upstream) -> None:
    client = clients(BATCH_KEY)
    f = upload(client, jsonl(*(line(f"req-{i}") for i in range(5))))
    assert (f.object, f.purpose, f.status, f.filename) == ("file", "batch", "processed", "input.jsonl")
    assert f.id.startswith("file-") and f.bytes > 0 and f.expires_at == f.created_at + 30 * 86400
    batch = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h",
                                  metadata={"job": "nightly"})
    assert batch.object == "batch" and batch.id.startswith("batch_") and batch.status == "validating"
    assert batch.metadata == {"job": "nightly"}
    done = wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 5, 0)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.error_file_id is None and done.errors is None
    out = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == [f"req-{i}" for i in range(5)]
    for o in out:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["object"] == "chat.completion"
    assert {o["response"]["request_id"] for o in out} and len({o["id"] for o in out}) == 5
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output" and output.bytes == len(client.files.content(done.output_file_id).content)
    assert len(upstream.calls("p-chat")) == 5


def test_one_file_may_mix_models(gateway, clients, upstream: FakeUpstream) -> None:
    client = clients(BATCH_KEY)
    batch = run_batch(client, jsonl(line("a1"), line("b1", "chat-b"), line("a2"), line("b2", "chat-b")))
    done = wait_batch(client, batch.id)
    assert done.status == "completed"
    served = {o["custom_id"]: o["response"]["body"]["model"] for o in lines_of(client, done.output_file_id)}
    assert served == {"a1": "p-chat", "a2": "p-chat", "b1": "p-chat-b", "b2": "p-chat-b"}


def test_an_embeddings_batch(gateway, clients, upstream: FakeUpstream) -> None:
    client = clients(BATCH_KEY)
    url = "/v1/embeddings"
    done = wait_batch(client, run_batch(client, jsonl(line("e1", "embed", url), line("e2", "embed", url)), url).id)
    out = lines_of(client, done.output_file_id)
    assert [o["response"]["body"]["object"] for o in out] == ["list", "list"]


def test_failed_lines_go_to_the_error_file(gateway, clients, upstream: FakeUpstream) -> None:
    upstream.default("p-bad", Behaviour(status=400))
    client = clients(BATCH_KEY)
    done = wait_batch(client, run_batch(client, jsonl(line("ok-1"), line("no-1", "bad"), line("ok-2"))).id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert sorted(o["custom_id"] for o in lines_of(client, done.output_file_id)) == ["ok-1", "ok-2"]
    [err] = lines_of(client, done.error_file_id)
    assert err["custom_id"] == "no-1"
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["message"] == "fake 400"
    assert err["error"]["code"] and err["error"]["message"] == "fake 400"


def test_an_invalid_file_fails_the_batch_with_line_numbered_errors(gateway, clients, upstream) -> None:
    client = clients(BATCH_KEY)
    content = jsonl(
        line("a"),
        b'{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {',
        line("c", url="/v1/embeddings"),
        line("a"),
        {**line("e"), "method": "GET"},
        line("f", model="no-such-model"),
    )
    done = wait_batch(client, run_batch(client, content).id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.output_file_id is None and done.error_file_id is None
    errors = [(e.line, e.code, e.param) for e in done.errors.data]
    assert errors == [(2, "invalid_json_line", None), (3, "url_mismatch", "url"), (4, "duplicate_custom_id", "custom_id"),
                      (5, "invalid_method", "method"), (6, "model_not_found", "body.model")]
    assert done.errors.object == "list" and all(e.message for e in done.errors.data)
    assert upstream.calls() == []


@pytest.mark.parametrize(
    ("name", "content", "purpose"),
    [
        ("input.jsonl", jsonl(line("refused")), "fine-tune"),
        ("input.txt", jsonl(line("refused")), "batch"),
        ("input.jsonl", b"custom_id,url\na,/v1/chat/completions\n", "batch"),
        ("input.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", "batch"),
    ],
    ids=["wrong-purpose", "not-jsonl-name", "csv", "binary"],
)
def test_wrong_purpose_or_a_non_jsonl_upload_is_refused(clients, name: str, content: bytes, purpose: str) -> None:
    client = clients(BATCH_KEY)
    before = len(client.files.list().data)
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=(name, content), purpose=purpose)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert len(client.files.list().data) == before  # nothing was kept


def test_an_upload_over_the_limit_gets_413(gateway, clients) -> None:
    client = clients(BATCH_KEY)
    filler = json.dumps(line("x")).encode() + b"\n"
    too_big = filler * (MAX_BYTES // len(filler) + 1)
    with pytest.raises(openai.APIStatusError) as info:
        upload(client, too_big)
    assert info.value.status_code == 413
    # Far over the limit: refused from Content-Length, before the body is read.
    response = httpx.post(gateway.url + "/v1/files", headers={"Authorization": f"Bearer {BATCH_KEY}"},
                          data={"purpose": "batch"}, files={"file": ("big.jsonl", too_big * 4)}, timeout=10)
    assert_openai_error(response, 413, code="file_too_large")
    assert upload(client, filler * (MAX_BYTES // len(filler))).bytes <= MAX_BYTES


def test_a_stalled_upload_gets_408(gateway) -> None:
    start = (b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--xyz\r\n'
             b'Content-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"a": 1}\n')
    head = (f"POST /v1/files HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {BATCH_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {len(start) + 100}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(head.encode() + start)  # and then nothing more
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_expires_after_is_honoured_and_checked(gateway, clients) -> None:
    client = clients(BATCH_KEY)
    f = upload(client, jsonl(line("a")), expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    with pytest.raises(openai.BadRequestError):
        upload(client, jsonl(line("a")), expires_after={"anchor": "created_at", "seconds": 60})


def test_files_can_be_read_and_deleted(gateway, clients) -> None:
    client = clients(BATCH_KEY)
    content = jsonl(line("a"), line("b"))
    f = upload(client, content)
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).content == content
    deleted = client.files.delete(f.id)
    assert (deleted.id, deleted.deleted) == (f.id, True)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(f.id)


def test_bad_batch_parameters_are_refused(gateway, clients) -> None:
    client = clients(BATCH_KEY)
    f = upload(client, jsonl(line("a")))
    for params in ({"endpoint": "/v1/responses"}, {"completion_window": "1h"}, {"metadata": {"k" * 65: "v"}}):
        args = {"input_file_id": f.id, "endpoint": CHAT, "completion_window": "24h", **params}
        with pytest.raises(openai.BadRequestError):
            client.batches.create(**args)  # type: ignore[arg-type]
    done = wait_batch(client, run_batch(client, jsonl(line("a"))).id)
    with pytest.raises(openai.BadRequestError):  # an output file is no batch input
        client.batches.create(input_file_id=done.output_file_id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.APIStatusError) as info:  # a completed batch cannot be cancelled
        client.batches.cancel(done.id)
    assert info.value.status_code == 409


def test_another_clients_files_and_batches_do_not_exist(gateway, clients) -> None:
    owner, other = clients(BATCH_KEY), clients(OTHER_KEY)
    f = upload(owner, jsonl(line("a")))
    batch = owner.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    calls = [
        lambda: other.files.retrieve(f.id), lambda: other.files.content(f.id), lambda: other.files.delete(f.id),
        lambda: other.batches.retrieve(batch.id), lambda: other.batches.cancel(batch.id),
        lambda: other.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in {x.id for x in other.files.list()}
    assert batch.id not in {b.id for b in other.batches.list()}
    assert owner.files.retrieve(f.id).id == f.id
    raw = httpx.get(f"{gateway.url}/v1/batches/{batch.id}", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert_openai_error(raw, 404)
    wait_batch(owner, batch.id)


def test_lists_paginate(gateway, clients) -> None:
    client = clients(LISTER_KEY)
    ids = [upload(client, jsonl(line(f"l{i}"))).id for i in range(5)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # the SDK follows after= to the end
    assert [f.id for f in client.files.list(limit=3, order="asc")] == ids
    assert [f.id for f in client.files.list(purpose="batch_output")] == []
    last = client.files.list(limit=10, after=ids[1])
    assert [f.id for f in last.data] == [ids[0]] and not last.has_more

    batches = [client.batches.create(input_file_id=i, endpoint=CHAT, completion_window="24h").id for i in ids[:3]]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == batches[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == batches[::-1]
    raw = httpx.get(f"{gateway.url}/v1/batches", params={"limit": 1, "after": batches[1]},
                    headers={"Authorization": f"Bearer {LISTER_KEY}"}).json()
    assert ([b["id"] for b in raw["data"]], raw["has_more"], raw["object"]) == ([batches[0]], False, "list")
    assert httpx.get(f"{gateway.url}/v1/batches", params={"limit": 0},
                     headers={"Authorization": f"Bearer {LISTER_KEY}"}).status_code == 400
    for b in batches:
        wait_batch(client, b)


def test_cancel_keeps_the_results_so_far(gateway, clients, upstream: FakeUpstream) -> None:
    upstream.default("p-slow", Behaviour(delay_s=0.4))
    client = clients(BATCH_KEY)
    batch = run_batch(client, jsonl(*(line(f"s{i}", "slow") for i in range(16))))
    deadline = time.monotonic() + 10
    while client.batches.retrieve(batch.id).request_counts.completed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = wait_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    out, err = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert out and all(o["response"]["status_code"] == 200 for o in out)
    cancelled = [e for e in err if e["error"]["code"] == "batch_cancelled"]
    assert cancelled and all(e["response"] is None for e in cancelled)
    assert sorted(o["custom_id"] for o in out + err) == sorted(f"s{i}" for i in range(16))
    assert done.request_counts.completed == len(out) and done.request_counts.failed == 0
    assert len(upstream.calls("p-slow")) < 16  # cancelled lines never reached the provider


def test_a_batch_past_its_window_expires_with_partial_results(gateway, clients, upstream) -> None:
    # Client "hasty" queues its batch lines in tier "brief", whose lines may wait two seconds.
    upstream.default("p-stuck", Behaviour(delay_s=4.0))
    client = clients(HASTY_KEY)
    batch = run_batch(client, jsonl(line("quick-1"), line("stuck-1", "stuck"), line("quick-2")))
    assert batch.expires_at - batch.created_at <= 3
    done = wait_batch(client, batch.id, timeout=10)
    assert done.status == "expired" and done.expired_at is not None
    assert sorted(o["custom_id"] for o in lines_of(client, done.output_file_id)) == ["quick-1", "quick-2"]
    [err] = lines_of(client, done.error_file_id)
    assert (err["custom_id"], err["error"]["code"]) == ("stuck-1", "batch_expired")
    assert done.request_counts.completed == 2


def test_a_client_without_background_queues_in_its_default_tier(gateway, clients, upstream) -> None:
    client = clients(CLIENT_KEY)  # tiers interactive and standard
    done = wait_batch(client, run_batch(client, jsonl(line("w1"))).id)
    assert done.status == "completed"
    [out] = lines_of(client, done.output_file_id)
    job = httpx.get(f"{gateway.url}/v1/jobs/{out['response']['request_id']}",
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"}).json()
    assert job["tier"] == "interactive" and job["status"] == "succeeded"
