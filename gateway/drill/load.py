"""The load generator: open-loop Poisson traffic per stream, over the OpenAI-compatible HTTP API.

Every request becomes a ``Record``. A request the gateway accepts as a job
(``202`` with ``Prefer: respond-async``, or ``503 request_deferred`` after the
hold) is long-polled at ``GET /v1/jobs/{id}?wait=`` until it is terminal, so at
the end ``accepted - terminal`` is exactly the number of jobs lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from gateway.drill.scenario import Scenario, TrafficSpec

TERMINAL = ("succeeded", "failed", "cancelled", "expired")
POLL_WAIT_S = 20


@dataclass(slots=True)
class Record:
    """One request's fate. Mutable while the request is in flight; read-only once ``LoadGenerator.run`` returns."""

    tier: str
    client: str
    t: float  # planned send time, seconds since the load started (the same in both runs)
    lag_s: float = 0.0  # how late the generator actually sent it
    is_async: bool = False  # sent with Prefer: respond-async
    status: int | None = None  # HTTP status of the first answer (None: no answer)
    latency_s: float | None = None  # time to that answer
    deferred: bool = False  # the gateway made it a job (202, 503 request_deferred, or 200 X-Gateway-Deferred)
    job_id: str | None = None
    job_status: str | None = None  # terminal job status once seen
    done_t: float | None = None  # when the job was seen terminal (or the sync answer came), seconds since start
    via: str | None = None  # realtime | minibatch | provider_batch (jobs only)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def accepted(self) -> bool:
        """The gateway took responsibility for it as a job."""
        return self.job_id is not None

    @property
    def terminal(self) -> bool:
        return self.job_status in TERMINAL

    @property
    def ok(self) -> bool:
        return self.job_status == "succeeded" if self.accepted else self.status == 200

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accepted": self.accepted, "terminal": self.terminal, "ok": self.ok}


def prompt_text(tokens: int) -> str:
    """About ``tokens`` tokens at four characters each (the simulator's own estimate)."""
    return ("lorem " * (tokens * 4 // 6 + 1))[: tokens * 4]


def arrivals(rate_per_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Poisson arrival times in [0, duration_s)."""
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            return out
        out.append(t)


def _usage(body: Any) -> tuple[int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class LoadGenerator:
    def __init__(self, scenario: Scenario, gateway_url: str, client: httpx.AsyncClient, keys: dict[str, str],
                 allow_async: bool) -> None:
        self.sc = scenario
        self.url = gateway_url
        self.client = client
        self.keys = keys  # client name -> API key
        self.allow_async = allow_async  # the plain-proxy run sends everything synchronously
        self.records: list[Record] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, t0: float) -> None:
        """Send the scenario's traffic from ``t0`` (monotonic) until its duration ends."""
        await asyncio.gather(*(self._stream(i, spec, t0) for i, spec in enumerate(self.sc.traffic)))

    async def finish(self, timeout_s: float) -> None:
        """Wait for every request and job poll to end; whatever is still open after ``timeout_s`` is abandoned."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _stream(self, index: int, spec: TrafficSpec, t0: float) -> None:
        rng = random.Random(self.sc.seed * 1000 + index)
        body = {"model": self.sc.model.name, "messages": [{"role": "user", "content": prompt_text(spec.prompt_tokens)}],
                "max_tokens": spec.max_tokens}
        for at in arrivals(spec.rate_per_s, self.sc.duration_s, rng):
            is_async = self.allow_async and rng.random() < spec.respond_async
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = Record(spec.tier, spec.client, round(at, 4), lag_s=round(time.monotonic() - t0 - at, 4), is_async=is_async)
            self.records.append(rec)
            task = asyncio.create_task(self._send(rec, body, t0), name=f"drill-request-{len(self.records)}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _headers(self, rec: Record) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.keys[rec.client]}", "X-Gateway-Tier": rec.tier}
        if rec.is_async:
            headers["Prefer"] = "respond-async"
        return headers

    async def _send(self, rec: Record, body: dict[str, Any], t0: float) -> None:
        start = time.monotonic()
        try:
            r = await self.client.post(self.url + "/v1/chat/completions", json=body, headers=self._headers(rec))
        except httpx.HTTPError as exc:
            rec.latency_s = time.monotonic() - start
            rec.error = f"{type(exc).__name__}: {exc}"
            return
        now = time.monotonic()
        rec.status, rec.latency_s = r.status_code, now - start
        payload = _json(r)
        if r.status_code == 200:
            rec.done_t = now - t0
            rec.prompt_tokens, rec.completion_tokens = _usage(payload)
            if r.headers.get("x-gateway-deferred") == "true":
                # Held and finished within hold_s: a job that already ended well.
                rec.deferred = True
                rec.job_id = r.headers.get("x-gateway-job-id") or f"held-{id(rec):x}"
                rec.job_status = "succeeded"
            return
        job_id = None
        if r.status_code == 202 and isinstance(payload, dict):
            job_id = payload.get("id")
        elif r.status_code == 503:
            job_id = r.headers.get("x-gateway-job-id")
        if not job_id:
            err = payload.get("error") if isinstance(payload, dict) else None
            rec.error = (err or {}).get("code") or (err or {}).get("message") or f"HTTP {r.status_code}"
            return
        rec.deferred, rec.job_id = True, str(job_id)
        await self._poll(rec, t0)

    async def _poll(self, rec: Record, t0: float) -> None:
        headers = {"Authorization": f"Bearer {self.keys[rec.client]}"}
        while True:
            try:
                r = await self.client.get(f"{self.url}/v1/jobs/{rec.job_id}", params={"wait": POLL_WAIT_S},
                                          headers=headers)
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            job = _json(r)
            if r.status_code != 200 or not isinstance(job, dict):
                await asyncio.sleep(0.5)
                continue
            if job.get("status") in TERMINAL:
                rec.job_status, rec.via = job["status"], job.get("via")
                rec.done_t = time.monotonic() - t0
                response = job.get("response") or {}
                rec.prompt_tokens, rec.completion_tokens = _usage(response.get("body"))
                if job["status"] != "succeeded":
                    rec.error = str((job.get("error") or {}).get("code") or job["status"])
                return


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None
