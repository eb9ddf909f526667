"""Staged fallback across a model's targets.

Stage 1 retries the same target on retryable failures, with jittered
exponential backoff that honours ``Retry-After`` inside the deadline. Stage 2
and later move down the model's target list. Targets whose circuit is open are
skipped without a call. ``next_step`` is the pure decision; ``Router`` runs it
against providers, admission limiters and circuits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from gateway.admission import Limiter
from gateway.circuit import Circuit, CircuitState
from gateway.config import Config, TierConfig
from gateway.errors import (
    AttemptFailed,
    CircuitOpen,
    GatewayError,
    Saturated,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.global_cap import GlobalCap
from gateway.observability.tracing import Tracing
from gateway.providers.base import Call, Deadlines, Provider, Reply, Stream, Usage

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0
MIN_ATTEMPT_S = 0.05  # no attempt is started with less time than this left

T = TypeVar("T")


class Step(str, Enum):
    RETRY = "retry"
    NEXT_TARGET = "next_target"
    GIVE_UP = "give_up"


def backoff_s(tries: int, rand: float) -> float:
    """Exponential in the number of tries so far, jittered into [50%, 100%] of the step."""
    step = min(BACKOFF_BASE_S * (2 ** max(tries - 1, 0)), BACKOFF_CAP_S)
    return step * (0.5 + rand / 2)


def next_step(
    retryable: bool, retry_after_s: float | None, tries: int, retries: int, remaining_s: float, rand: float
) -> tuple[Step, float]:
    """What to do after the ``tries``-th failed attempt on one target."""
    if not retryable:
        return Step.GIVE_UP, 0.0
    if remaining_s <= MIN_ATTEMPT_S:
        return Step.GIVE_UP, 0.0
    if tries > retries:
        return Step.NEXT_TARGET, 0.0
    delay = backoff_s(tries, rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    if delay + MIN_ATTEMPT_S >= remaining_s:
        return Step.NEXT_TARGET, 0.0
    return Step.RETRY, delay


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    circuit: Circuit

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One upstream attempt, as the health monitor and metrics see it."""

    provider: str
    model: str
    status: int | None  # None: no HTTP answer (connection error or timeout)
    timeout: bool
    latency_s: float
    ttft_s: float | None = None

    @property
    def status_class(self) -> str:
        if self.timeout:
            return "timeout"
        if self.status is None:
            return "error"
        if self.status == 429:
            return "429"
        return f"{self.status // 100}xx"


@dataclass(slots=True)
class Served:
    """A successful attempt: a reply, or a stream whose first event is already in hand."""

    target: Target
    attempts: int
    release: Callable[[], None]
    reply: Reply | None = None
    stream: Stream | None = None
    first_event: bytes = b""
    rest: AsyncIterator[bytes] | None = None
    span: Any = None  # the attempt's span, ended when a stream ends (tracing on only)


class Slot:
    """What one attempt holds: a local admission slot, and a global-cap lease where configured."""

    __slots__ = ("router", "limiter", "tier", "cap", "token")

    def __init__(self, router: Router, limiter: Limiter, tier: str) -> None:
        self.router = router
        self.limiter = limiter
        self.tier = tier
        self.cap: GlobalCap | None = None
        self.token: str | None = None

    def release(self) -> None:
        self.limiter.release(self.tier)
        if self.cap is not None and self.token is not None:
            self.router.spawn(self.cap.release(self.token))
            self.token = None


Observer = Callable[[Outcome], None]


class Router:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        limiters: dict[str, Limiter],
        observers: list[Observer] | None = None,
        on_fallback: Callable[[str, Target, Target], None] | None = None,
        on_circuit: Callable[[str, bool], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.providers = providers
        self.tracing = tracing or Tracing()
        self.caps: dict[str, GlobalCap] = {}  # providers with a global_max_concurrency (set by the gateway)
        self._background: set[asyncio.Task[Any]] = set()
        self._kinds = {n: (p.kind, p.base_url) for n, p in config.providers.items()}
        self.limiters = limiters
        self.observers = observers if observers is not None else []
        self._on_fallback = on_fallback
        self._on_circuit = on_circuit
        self.targets: dict[str, list[Target]] = {}
        circuits: dict[tuple[str, str], Circuit] = {}
        for name, model in config.models.items():
            targets = []
            for t in model.targets:
                key = (t.provider, t.model)
                if key not in circuits:
                    c = config.providers[t.provider].circuit
                    circuits[key] = Circuit(c.failure_threshold, c.cooldown_s)
                targets.append(Target(t.provider, t.model, circuits[key]))
            self.targets[name] = targets
        self._circuits = circuits

    def circuit_states(self) -> dict[str, str]:
        return {f"{p}/{m}": c.state.value for (p, m), c in self._circuits.items()}

    def _observe(self, outcome: Outcome) -> None:
        for observer in self.observers:
            observer(outcome)

    def _circuit_changed(self, provider: str) -> None:
        if self._on_circuit is not None:
            is_open = any(c.state is not CircuitState.CLOSED for (p, _), c in self._circuits.items() if p == provider)
            self._on_circuit(provider, is_open)

    async def serve(
        self,
        model: str,
        route: str,
        body: dict,
        tier_name: str,
        tier: TierConfig,
        started: float,
        stream: bool,
        strip_usage: bool = False,
        request_id: str = "",
        pace: Callable[[str], Awaitable[float]] | None = None,
    ) -> Served:
        """Run the stages until one attempt succeeds; raise the right ``GatewayError`` otherwise.

        ``pace(provider)``, when given, runs once a slot is held and just before each
        upstream call: the drain waits there for its provider's rate envelope, so the
        calls reach the provider at the envelope's pace rather than in bursts when slots
        free up. It returns the seconds it waited, which are not charged to the tier's timeout.
        """
        targets = self.targets[model]
        deadlines = Deadlines(started + tier.timeout_s, tier.connect_timeout_s, tier.first_byte_timeout_s)
        attempts = 0
        last: GatewayError | None = None
        previous: Target | None = None
        for index, target in enumerate(targets):
            tries = 0
            while True:
                now = time.monotonic()
                if not target.circuit.allow(now):
                    if last is None or isinstance(last, CircuitOpen):
                        last = CircuitOpen(
                            f"Every target of model {model!r} has an open circuit.",
                            headers={"Retry-After": str(max(int(target.circuit.retry_in(now)) + 1, 1))},
                        )
                    break
                slot = await self._take_slot(target, tier_name, tier, deadlines, index == len(targets) - 1)
                if slot is None:
                    target.circuit.abandon()
                    last = last or Saturated("All slots for this tier are busy.", headers={"Retry-After": "1"})
                    break  # spill over to the next target rather than wait
                if previous is not None and previous is not target and self._on_fallback is not None:
                    self._on_fallback(model, previous, target)
                previous = target
                if pace is not None:
                    try:
                        waited = await pace(target.provider)
                    except BaseException:
                        slot.release()
                        target.circuit.abandon()
                        raise
                    if waited > 0:
                        deadlines = Deadlines(deadlines.deadline + waited, deadlines.connect_s, deadlines.first_byte_s)
                attempts += 1
                tries += 1
                body["model"] = target.model
                call = Call(route, target.model, body, deadlines, request_id, strip_usage)
                try:
                    served = await self._attempt(target, call, stream, deadlines, attempts, index + 1)
                except AttemptFailed as failure:
                    slot.release()
                    if failure.counts_against_circuit:
                        target.circuit.failure(time.monotonic())
                    else:
                        target.circuit.abandon()
                    self._circuit_changed(target.provider)
                    remaining = deadlines.deadline - time.monotonic()
                    step, delay = next_step(
                        failure.retryable, failure.retry_after, tries, tier.retries, remaining, random.random()
                    )
                    if step is Step.GIVE_UP:
                        raise self._final(failure, attempts) from None
                    last = failure
                    if step is Step.RETRY:
                        await asyncio.sleep(delay)
                        continue
                    break
                except BaseException:
                    slot.release()
                    target.circuit.abandon()
                    raise
                was_closed = target.circuit.state is CircuitState.CLOSED
                target.circuit.success()
                if not was_closed:
                    self._circuit_changed(target.provider)
                served.attempts = attempts
                served.release = slot.release
                return served
        assert last is not None
        raise self._final(last, attempts)

    async def _take_slot(
        self, target: Target, tier_name: str, tier: TierConfig, deadlines: Deadlines, last_target: bool
    ) -> Slot | None:
        """A concurrency slot on the target's provider (and its global cap, if any).

        ``None`` means busy and not worth waiting for, because another target is left to try.
        """
        limiter = self.limiters[target.provider]
        now = time.monotonic()
        wait_s = min(tier.admission_timeout_s, deadlines.deadline - now)
        if not limiter.try_acquire(tier_name):
            if not last_target:
                return None
            try:
                await limiter.acquire(tier_name, wait_s)
            except BaseException:
                target.circuit.abandon()
                raise
        slot = Slot(self, limiter, tier_name)
        cap = self.caps.get(target.provider)
        if cap is not None:
            try:
                slot.cap, slot.token = cap, await cap.acquire(deadlines.deadline - now, wait_s if last_target else 0.0)
            except Saturated:
                slot.release()
                if not last_target:
                    return None
                target.circuit.abandon()
                raise
            except BaseException:
                slot.release()
                target.circuit.abandon()
                raise
        return slot

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _final(last: GatewayError, attempts: int) -> GatewayError:
        if not isinstance(last, AttemptFailed):
            last.headers["X-Gateway-Attempts"] = str(attempts)
            return last
        if not last.retryable and last.upstream_status is not None:
            error: GatewayError = UpstreamRejected(last)
        elif last.timeout:
            error = UpstreamTimeout(f"{last.message} Gave up after {attempts} attempt(s).")
        else:
            error = UpstreamError(f"{last.message} Gave up after {attempts} attempt(s).")
        error.headers["X-Gateway-Attempts"] = str(attempts)
        return error

    async def _attempt(
        self, target: Target, call: Call, stream: bool, deadlines: Deadlines, attempt: int = 1, stage: int = 1
    ) -> Served:
        if not self.tracing.enabled:
            return await self._attempt_io(target, call, stream, deadlines)
        kind, base_url = self._kinds[target.provider]
        span = self.tracing.attempt_span(call.route, kind, target.model, base_url, attempt, stage)
        try:
            served = await self._attempt_io(target, call, stream, deadlines)
        except AttemptFailed as failure:
            error_type = failure.code if failure.upstream_status is None else str(failure.upstream_status)
            self.tracing.fail(span, error_type, failure.message)
            span.end()
            raise
        except BaseException:
            span.end()
            raise
        if served.reply is not None:
            annotate(span, served.reply.response_model, served.reply.usage, served.reply.finish_reasons)
            span.end()
        else:
            served.span = span  # ended with the stream, once usage and finish reasons are known
        return served

    async def _attempt_io(self, target: Target, call: Call, stream: bool, deadlines: Deadlines) -> Served:
        provider = self.providers[target.provider]
        t0 = time.monotonic()
        # The answer (for streams, its first event) is due first_byte_s after the attempt starts, so a
        # hung target leaves time in the deadline for the next one; the providers enforce the total.
        first_byte_by = deadlines.deadline
        if deadlines.first_byte_s is not None:
            first_byte_by = min(first_byte_by, t0 + deadlines.first_byte_s)
        try:
            if not stream:
                if deadlines.first_byte_s is not None:
                    # A non-streamed answer arrives whole: its first byte is due when the answer is.
                    # The provider's own client timeout enforces it, with no extra timer task here.
                    call.deadlines = Deadlines(first_byte_by, deadlines.connect_s, deadlines.first_byte_s)
                reply = await provider.complete(call)
                self._observe(Outcome(target.provider, target.model, reply.status, False, time.monotonic() - t0))
                return Served(target, 0, _noop, reply=reply)
            opened = await _first_byte(provider.stream(call), first_byte_by)
            rest = opened.__aiter__()
            wait = first_byte_by - time.monotonic()
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    first = await rest.__anext__()
            except TimeoutError:
                await opened.aclose()
                raise AttemptFailed(
                    "The upstream sent no first token in time.", retryable=True, timeout=True
                ) from None
            except StopAsyncIteration:
                await opened.aclose()
                raise AttemptFailed("The upstream stream ended before its first event.", retryable=True) from None
            except BaseException:
                await opened.aclose()
                raise
            ttft = time.monotonic() - t0
            self._observe(Outcome(target.provider, target.model, 200, False, ttft, ttft))
            return Served(target, 0, _noop, stream=opened, first_event=first, rest=rest)
        except AttemptFailed as failure:
            self._observe(
                Outcome(target.provider, target.model, failure.upstream_status, failure.timeout, time.monotonic() - t0)
            )
            raise


async def _first_byte(awaitable: Awaitable[T], by: float) -> T:
    """``awaitable``'s result, or a retryable timeout failure once the monotonic time ``by`` passes."""
    try:
        async with asyncio.timeout(max(by - time.monotonic(), 0.0)):
            return await awaitable
    except TimeoutError:
        raise AttemptFailed("The upstream did not answer in time (first byte).", retryable=True, timeout=True) from None


def _noop() -> None:
    return None


def annotate(span: Any, response_model: str | None, usage: Usage | None, finish_reasons: Any) -> None:
    """GenAI response attributes on an attempt span."""
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    if finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
