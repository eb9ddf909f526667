"""Provider kind ``simulator``: fake models with tunable latency and faults.

``Simulator`` holds the behaviour and builds OpenAI-shaped answers; it serves
both the in-process provider (the embedded default) and the standalone
``gateway simulator`` server, so a trial behaves the same either way. Its
behaviour can be changed while it runs, which is how drills inject incidents.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import SimulatorConfig
from gateway.errors import AttemptFailed
from gateway.providers import sse
from gateway.providers.base import BatchItem, BatchPoll, BatchState, Call, batch_results, finish_reasons, Reply, StreamStats, Usage

_WORDS = ("the", "gateway", "routes", "each", "request", "to", "a", "tier", "and", "serves", "it", "well")


@dataclass(frozen=True, slots=True)
class Fault:
    """What the simulator decided for one call: answer normally, or fail with ``status``."""

    status: int = 200
    retry_after_s: float | None = None


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough token count (4 characters a token), enough for metering and cost tests."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    prompt = body.get("prompt") or body.get("input")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):
        chars += sum(len(p) if isinstance(p, str) else 1 for p in prompt)
    return max(chars // 4, 1)


class Simulator:
    def __init__(self, behaviour: SimulatorConfig, seed: int | None = None) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(seed)
        self.calls = 0

    def update(self, **changes: Any) -> SimulatorConfig:
        self.behaviour = SimulatorConfig.model_validate({**self.behaviour.model_dump(), **changes})
        return self.behaviour

    def fault(self, batch: bool = False) -> Fault:
        """The outcome of one call. Batch items never get 429: like OpenAI's and Anthropic's, the
        simulated batch API has its own quota, apart from the realtime rate limits a storm hits."""
        self.calls += 1
        b = self.behaviour
        roll = self._rng.random()
        limited = 0.0 if batch else b.rate_limited_ratio
        if roll < limited:
            return Fault(429, 1.0)
        if roll < limited + b.error_ratio:
            return Fault(500)
        return Fault()

    def latency_s(self) -> float:
        b = self.behaviour
        jitter = self._rng.uniform(-b.latency_jitter_ms, b.latency_jitter_ms) if b.latency_jitter_ms else 0.0
        return max(b.latency_ms + jitter, 0.0) / 1000.0

    def output_tokens(self, body: dict[str, Any]) -> int:
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        n = self.behaviour.output_tokens
        return min(n, cap) if isinstance(cap, int) and cap > 0 else n

    @staticmethod
    def error_body(fault: Fault) -> bytes:
        kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
        return orjson.dumps({"error": {"message": f"simulated {fault.status}", "type": kind, "param": None, "code": kind}})

    def answer(self, route: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """The full (non-streaming) answer for ``route``."""
        now = int(time.time())
        ident = f"sim-{self._rng.getrandbits(64):016x}"
        pt = prompt_tokens(body)
        if route == "embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
            dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
            data = []
            for i, item in enumerate(items):
                vec = [((hash((str(item), d)) % 2000) - 1000) / 1000.0 for d in range(dims)]
                emb: Any = vec
                if body.get("encoding_format") == "base64":
                    emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                data.append({"object": "embedding", "index": i, "embedding": emb})
            return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": pt, "total_tokens": pt}}
        n = self.output_tokens(body)
        text = " ".join(_WORDS[i % len(_WORDS)] for i in range(n))
        usage = {"prompt_tokens": pt, "completion_tokens": n, "total_tokens": pt + n}
        if route == "completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            return {"id": ident, "object": "text_completion", "created": now, "model": model, "choices": [choice], "usage": usage}
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return {"id": ident, "object": "chat.completion", "created": now, "model": model, "choices": [choice], "usage": usage}

    def run_batch(self, route: str, lines: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
        """Answer every line (``custom_id``, ``body``) of a batch; return OpenAI output and error file lines."""
        out, err = [], []
        for line in lines:
            body = line.get("body") or {}
            fault = self.fault(batch=True)
            record: dict[str, Any] = {"id": f"batch_req_{self._rng.getrandbits(64):016x}", "custom_id": line.get("custom_id"),
                                      "error": None}
            rid = f"req_{self._rng.getrandbits(64):016x}"
            if fault.status != 200:
                record["response"] = {"status_code": fault.status, "request_id": rid, "body": orjson.loads(self.error_body(fault))}
                err.append(orjson.dumps(record))
            else:
                answer = self.answer(route, str(body.get("model", "")), body)
                record["response"] = {"status_code": 200, "request_id": rid, "body": answer}
                out.append(orjson.dumps(record))
        return out, err

    def chunks(self, route: str, model: str, body: dict[str, Any]) -> list[bytes]:
        """The events of a streamed answer, ``[DONE]`` included; usage only when asked for."""
        full = self.answer(route, model, body)
        base = {"id": full["id"], "created": full["created"], "model": model}
        words = (full["choices"][0].get("text") or full["choices"][0]["message"]["content"]).split(" ")
        out: list[dict[str, Any]] = []
        if route == "completions":
            base["object"] = "text_completion"
            for i, w in enumerate(words):
                out.append({**base, "choices": [{"index": 0, "text": w if i == 0 else " " + w, "finish_reason": None, "logprobs": None}]})
            out.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]})
        else:
            base["object"] = "chat.completion.chunk"
            out.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            for i, w in enumerate(words):
                out.append({**base, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}]})
            out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append({**base, "choices": [], "usage": full["usage"]})
        return [sse.event(orjson.dumps(c)) for c in out] + [sse.DONE]


class SimulatorProvider:
    """The simulator in-process: no HTTP, the same answers, latencies and faults."""

    kind = "simulator"

    def __init__(self, name: str, behaviour: SimulatorConfig) -> None:
        self.name = name
        self.simulator = Simulator(behaviour)
        self._batches: dict[str, tuple[float, list[BatchItem]]] = {}

    def _check(self, call: Call) -> None:
        fault = self.simulator.fault()
        if fault.status != 200:
            raise AttemptFailed(
                f"Upstream answered {fault.status}.",
                retryable=True,
                upstream_status=fault.status,
                retry_after=fault.retry_after_s,
                upstream_body=self.simulator.error_body(fault),
                upstream_content_type="application/json",
            )

    async def _sleep(self, seconds: float, call: Call) -> None:
        remaining = call.deadlines.deadline - time.monotonic()
        if seconds >= remaining:
            await asyncio.sleep(max(remaining, 0))
            raise AttemptFailed("The upstream did not answer in time (total).", retryable=True, timeout=True)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def complete(self, call: Call) -> Reply:
        await self._sleep(self.simulator.latency_s(), call)
        self._check(call)
        obj = self.simulator.answer(call.route, call.model, call.body)
        return Reply(200, orjson.dumps(obj), "application/json", Usage.from_openai(obj.get("usage")), call.model,
                     finish_reasons(obj))

    async def stream(self, call: Call) -> SimulatedStream:
        self._check(call)
        return SimulatedStream(self, call)

    async def submit_batch(self, model: str, items: list[BatchItem]) -> str:
        """An in-memory batch that completes after the behaviour's ``batch_latency_ms``."""
        batch_id = f"simbatch_{self.simulator._rng.getrandbits(64):016x}"
        ready = time.monotonic() + self.simulator.behaviour.batch_latency_ms / 1000.0
        self._batches[batch_id] = (ready, items)
        return batch_id

    async def poll_batch(self, batch_id: str) -> BatchPoll:
        if batch_id not in self._batches:
            # In-memory batches do not survive a restart; the poller re-queues their jobs.
            return BatchPoll(BatchState.EXPIRED, error="the simulator forgot this batch (restarted)")
        ready, items = self._batches[batch_id]
        if time.monotonic() < ready:
            return BatchPoll(BatchState.IN_PROGRESS)
        del self._batches[batch_id]
        route = items[0].route if items else "chat/completions"
        out, err = self.simulator.run_batch(route, [{"custom_id": i.custom_id, "body": i.body} for i in items])
        results = batch_results(b"\n".join(out + err))
        return BatchPoll(BatchState.COMPLETED, results, counts={"total": len(items), "completed": len(out), "failed": len(err)})

    async def aclose(self) -> None:
        return None


class SimulatedStream:
    def __init__(self, provider: SimulatorProvider, call: Call) -> None:
        self._provider = provider
        self._call = call
        self.stats = StreamStats()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sim = self._provider.simulator
        b = sim.behaviour
        await self._provider._sleep(b.first_token_ms / 1000.0, self._call)
        for i, ev in enumerate(sim.chunks(self._call.route, self._call.model, self._call.body)):
            if i and b.chunk_interval_ms:
                await self._provider._sleep(b.chunk_interval_ms / 1000.0, self._call)
            if sse.observe(ev, self.stats, self._call.strip_usage):
                yield ev

    async def aclose(self) -> None:
        return None

