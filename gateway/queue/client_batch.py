"""One client batch (Batch API): its statuses, its object, and the lines of its output files.

Pure values and functions; ``client_batches`` holds the state machine that moves
batches through these statuses in Redis.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from gateway.auth import Client
from gateway.queue.job import JobStatus


class BatchStatus(str, Enum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


def batch_tier(client: Client, configured: str | None) -> str:
    """The tier of a client's batch lines: its ``batch_tier``, else background if allowed, else its default."""
    if configured:
        return configured
    if "background" in client.tiers:
        return "background"
    return client.default_tier


def batch_job_id(batch_id: str, index: int) -> str:
    """Line ``index``'s job id: derived, so a resumed fan-out finds what it already queued."""
    digest = hashlib.sha256(f"{batch_id}:{index}".encode()).digest()[:18]
    return "job_" + base64.urlsafe_b64encode(digest).decode()


def result_line(job_id: str, custom_id: str, status: JobStatus, response_status: int | None,
                response_body: bytes | None, error: dict[str, Any] | None) -> tuple[str, bytes]:
    """A settled line as (kind, output-file line); kind is completed, failed, or none (cancelled)."""
    response = None
    if response_status is not None:
        body: Any = None
        if response_body:
            try:
                body = orjson.loads(response_body)
            except orjson.JSONDecodeError:
                body = response_body.decode(errors="replace")
        response = {"status_code": response_status, "request_id": job_id, "body": body}
    line: dict[str, Any] = {"id": "batch_req_" + job_id.removeprefix("job_"), "custom_id": custom_id,
                            "response": response, "error": None}
    if status is JobStatus.SUCCEEDED:
        return "completed", orjson.dumps(line)
    if status is JobStatus.CANCELLED:
        line["error"] = {"code": "request_cancelled", "message": "The request was cancelled before it ran."}
        return "none", orjson.dumps(line)
    err = error or {}
    upstream = response["body"].get("error") if response and isinstance(response["body"], dict) else None
    if isinstance(upstream, dict):  # the provider's own words beat the gateway's summary of them
        err = {"code": upstream.get("code") or "request_failed", "message": upstream.get("message") or ""}
    code = "batch_expired" if status is JobStatus.EXPIRED else err.get("code") or "request_failed"
    message = err.get("message") or f"The request ended {status.value}."
    line["error"] = {"code": code, "message": message}
    return "failed", orjson.dumps(line)


def leftover_line(job_id: str, custom_id: str, final: BatchStatus) -> bytes:
    """The error line of a request the batch ended without (cancelled, expired, or lost)."""
    if final is BatchStatus.CANCELLED:
        error = {"code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."}
    elif final is BatchStatus.EXPIRED:
        error = {"code": "batch_expired",
                 "message": "This request could not be executed before the completion window expired."}
    else:
        error = {"code": "result_unavailable", "message": "The result of this request is no longer available."}
    return orjson.dumps({"id": "batch_req_" + job_id.removeprefix("job_"), "custom_id": custom_id,
                         "response": None, "error": error})


_STAMPS = ("created", "in_progress", "expires", "finalizing", "completed", "failed", "expired", "cancelling",
           "cancelled")


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch as Redis holds it: a flat hash of strings (object fields, counters, leases)."""

    h: dict[str, str]

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> BatchRecord:
        return cls({k.decode(): v.decode() for k, v in raw.items()})

    def num(self, key: str) -> float:
        return float(self.h.get(key) or 0)

    def stamp(self, key: str) -> int | None:
        return int(float(self.h[key])) if self.h.get(key) else None

    @property
    def id(self) -> str:
        return self.h["id"]

    @property
    def client(self) -> str:
        return self.h.get("client", "")

    @property
    def status(self) -> BatchStatus:
        return BatchStatus(self.h["status"])

    def to_object(self) -> dict[str, Any]:
        """The OpenAI ``batch`` object."""
        errors = self.h.get("errors")
        metadata = self.h.get("metadata")
        return {
            "id": self.id, "object": "batch", "endpoint": self.h["endpoint"],
            "errors": orjson.loads(errors) if errors else None,
            "input_file_id": self.h["input_file_id"], "completion_window": self.h["completion_window"],
            "status": self.h["status"], "output_file_id": self.h.get("output_file_id") or None,
            "error_file_id": self.h.get("error_file_id") or None,
            **{f"{k}_at": self.stamp(f"{k}_at") for k in _STAMPS},
            "request_counts": {"total": int(self.num("total")), "completed": int(self.num("completed")),
                               "failed": int(self.num("failed"))},
            "metadata": orjson.loads(metadata) if metadata else None,
        }
