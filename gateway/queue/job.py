"""The job: a deferred request, its state, and the job object clients see."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})


class Via(str, Enum):
    REALTIME = "realtime"
    MINIBATCH = "minibatch"
    PROVIDER_BATCH = "provider_batch"


def new_job_id() -> str:
    """144 random bits: unguessable, so an id is no capability to another client's job."""
    return "job_" + secrets.token_urlsafe(18)


@dataclass(slots=True)
class Job:
    id: str
    client: str
    tier: str
    model: str
    route: str
    body: bytes  # the client's JSON body, as received
    created_at: float
    deadline: float
    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    via: Via | None = None
    completed_at: float | None = None
    response_status: int | None = None
    response_body: bytes | None = None
    error: dict[str, Any] | None = None
    stream: bool = False  # the client asked to stream; the held answer is replayed as SSE
    traceparent: str = ""
    callback_url: str = ""
    webhook: dict[str, Any] | None = None
    target: str = ""
    batch_id: str = ""  # the client-facing batch this job is a line of
    custom_id: str = ""  # that line's custom_id
    realtime_only: bool = False  # never pack into a provider batch (e.g. after one failed)

    def to_hash(self) -> dict[str, bytes | str | int | float]:
        h: dict[str, bytes | str | int | float] = {
            "id": self.id, "client": self.client, "tier": self.tier, "model": self.model, "route": self.route,
            "body": self.body, "created_at": self.created_at, "deadline": self.deadline,
            "status": self.status.value, "attempts": self.attempts, "stream": int(self.stream),
            "traceparent": self.traceparent, "callback_url": self.callback_url,
            "batch_id": self.batch_id, "custom_id": self.custom_id, "realtime_only": int(self.realtime_only),
        }
        return h

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> Job:
        def s(key: str, default: str = "") -> str:
            v = h.get(key.encode())
            return v.decode() if v is not None else default

        def f(key: str) -> float | None:
            v = h.get(key.encode())
            return float(v) if v else None

        error = h.get(b"error")
        webhook = h.get(b"webhook")
        rs = h.get(b"response_status")
        via = s("via")
        return cls(
            id=s("id"), client=s("client"), tier=s("tier"), model=s("model"), route=s("route"),
            body=h.get(b"body", b""), created_at=f("created_at") or 0.0, deadline=f("deadline") or 0.0,
            status=JobStatus(s("status", "queued")), attempts=int(s("attempts", "0") or 0),
            via=Via(via) if via else None, completed_at=f("completed_at"),
            response_status=int(rs) if rs else None, response_body=h.get(b"response_body"),
            error=orjson.loads(error) if error else None, stream=s("stream") == "1",
            traceparent=s("traceparent"), callback_url=s("callback_url"),
            webhook=orjson.loads(webhook) if webhook else None, target=s("target"),
            batch_id=s("batch_id"), custom_id=s("custom_id"), realtime_only=s("realtime_only") == "1",
        )

    def to_object(self) -> dict[str, Any]:
        """The ``gateway.job`` object of DESIGN.md §3."""
        response = None
        if self.response_status is not None:
            body: Any = None
            if self.response_body:
                try:
                    body = orjson.loads(self.response_body)
                except orjson.JSONDecodeError:
                    body = self.response_body.decode(errors="replace")
            response = {"status_code": self.response_status, "body": body}
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "gateway.job",
            "status": self.status.value,
            "tier": self.tier,
            "model": self.model,
            "created_at": int(self.created_at),
            "completed_at": int(self.completed_at) if self.completed_at else None,
            "attempts": self.attempts,
            "via": self.via.value if self.via else None,
            "response": response,
            "error": self.error,
        }
        if self.webhook is not None:
            obj["webhook"] = self.webhook
        return obj
