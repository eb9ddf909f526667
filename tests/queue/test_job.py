"""The job record: its Redis hash round trip and the ``gateway.job`` object clients see."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.queue.job import Job, JobStatus, Via, new_job_id

CONTRACT_KEYS = {"id", "object", "status", "tier", "model", "created_at", "completed_at", "attempts", "via",
                 "response", "error"}


def as_redis(h: dict[str, Any]) -> dict[bytes, bytes]:
    """What HGETALL gives back for a mapping written with redis-py (its encoding of each value type)."""
    out = {}
    for k, v in h.items():
        if isinstance(v, bytes):
            b = v
        elif isinstance(v, float):
            b = repr(v).encode()
        else:
            b = str(v).encode()
        out[k.encode()] = b
    return out


def job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "id": "job_abc", "client": "web", "tier": "standard", "model": "chat", "route": "chat/completions",
        "body": b'{"model":"chat","messages":[{"role":"user","content":"h\xc3\xa9"}]}',
        "created_at": 1700000000.25, "deadline": 1700086400.25,
    }
    fields.update(overrides)
    return Job(**fields)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"stream": True},
        {"attempts": 3, "status": JobStatus.RUNNING},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         "callback_url": "https://hooks.example.com/x?y=1"},
        {"batch_id": "batch_1", "custom_id": "line-7", "realtime_only": True},
        {"body": b"\x00\xff not json at all"},  # bytes survive as bytes
        {"route": "embeddings", "model": "embed"},
    ],
    ids=["plain", "stream", "running", "trace-and-callback", "batch-line", "raw-bytes", "embeddings"],
)
def test_hash_round_trip(overrides):
    original = job(**overrides)
    assert Job.from_hash(as_redis(original.to_hash())) == original


def test_from_hash_reads_the_fields_completion_writes():
    h = as_redis(job().to_hash())
    h.update(as_redis({
        "status": "succeeded", "attempts": 2, "via": "minibatch", "completed_at": 1700000005.5,
        "response_status": 200, "response_body": b'{"object":"chat.completion"}',
        "target": "primary/p-chat", "webhook": orjson.dumps({"status": "delivered", "attempts": 1}),
    }))
    done = Job.from_hash(h)
    assert (done.status, done.attempts, done.via, done.completed_at) == (JobStatus.SUCCEEDED, 2, Via.MINIBATCH, 1700000005.5)
    assert (done.response_status, done.response_body, done.target) == (200, b'{"object":"chat.completion"}', "primary/p-chat")
    assert done.webhook == {"status": "delivered", "attempts": 1}
    assert done.error is None


def test_new_job_ids_are_unguessable():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    for i in ids:
        assert i.startswith("job_")
        assert len(i) - 4 >= 24  # 144 random bits, base64url
        assert all(c.isalnum() or c in "-_" for c in i[4:])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {},
            {"status": "queued", "completed_at": None, "attempts": 0, "via": None, "response": None, "error": None},
        ),
        (
            {"status": JobStatus.SUCCEEDED, "attempts": 1, "via": Via.MINIBATCH, "completed_at": 1700000009.9,
             "response_status": 200, "response_body": b'{"object":"chat.completion","choices":[]}'},
            {"status": "succeeded", "completed_at": 1700000009, "attempts": 1, "via": "minibatch",
             "response": {"status_code": 200, "body": {"object": "chat.completion", "choices": []}}, "error": None},
        ),
        (
            {"status": JobStatus.FAILED, "attempts": 5, "via": Via.MINIBATCH, "completed_at": 1700000010.0,
             "response_status": 400, "response_body": b"upstream said no",
             "error": {"message": "bad", "type": "invalid_request_error", "code": None}},
            {"status": "failed", "completed_at": 1700000010, "attempts": 5, "via": "minibatch",
             "response": {"status_code": 400, "body": "upstream said no"},
             "error": {"message": "bad", "type": "invalid_request_error", "code": None}},
        ),
        (
            {"status": JobStatus.EXPIRED, "completed_at": 1700000011.0,
             "error": {"message": "late", "type": "server_error", "code": "expired"}},
            {"status": "expired", "completed_at": 1700000011, "attempts": 0, "via": None, "response": None,
             "error": {"message": "late", "type": "server_error", "code": "expired"}},
        ),
        (
            {"status": JobStatus.CANCELLED, "completed_at": 1700000012.0},
            {"status": "cancelled", "completed_at": 1700000012, "attempts": 0, "via": None, "response": None,
             "error": None},
        ),
    ],
    ids=["queued", "succeeded", "failed-non-json-body", "expired", "cancelled"],
)
def test_to_object(overrides, expected):
    obj = job(**overrides).to_object()
    assert set(obj) == CONTRACT_KEYS
    assert obj["id"] == "job_abc"
    assert obj["object"] == "gateway.job"
    assert (obj["tier"], obj["model"], obj["created_at"]) == ("standard", "chat", 1700000000)
    assert {k: obj[k] for k in expected} == expected
    orjson.dumps(obj)  # serialisable as it stands


def test_to_object_carries_the_webhook_record_only_when_there_is_one():
    assert "webhook" not in job().to_object()
    record = {"status": "delivered", "attempts": 2, "http_status": 204}
    assert job(webhook=record).to_object()["webhook"] == record


def test_terminal_statuses():
    assert {s for s in JobStatus if s.terminal} == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                                                     JobStatus.EXPIRED}
