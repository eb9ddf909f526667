"""Prometheus metrics: the fixed names of DESIGN.md §3 and the rest the dashboards read, with children bound once.

Each ``Metrics`` owns its own registry (no module-level state), so several
gateways can live in one process, as they do in tests. Label children are
cached in dicts because ``labels()`` costs far more than ``inc()`` on the hot path.
Every metric is declared through one helper, which records it in ``catalog``:
``python -m gateway.observability.metrics_doc`` renders docs/metrics.md from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from gateway import __version__
from gateway.errors import GatewayError, RateLimited
from gateway.router import Outcome

if TYPE_CHECKING:
    from gateway.config import Config

# LLM latencies run from a few milliseconds (cached, embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A healthy loop wakes within a millisecond; a blocked one shows up in the upper buckets.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Stands in for a model name the gateway does not serve, so clients cannot mint label values.
UNKNOWN_MODEL = "-"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One exported metric as the reference documents it."""

    name: str  # as exposed (counters with their ``_total``)
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


# Every outcome label (``outcome_of``, or ``error_outcome``), deferral reason, and upstream status class.
OUTCOMES = ("success", "accepted", "client_error", "throttled", "rate_limited", "cancelled", "timeout", "error")
# A 429 for a client over its own rate limits: its doing, not a failure of the gateway (unlike saturation).
THROTTLED = "throttled"
DEFERRAL_REASONS = ("requested", "async_tier", "mode", "saturated")
STATUS_CLASSES = ("2xx", "4xx", "5xx", "429", "timeout", "error")


def outcome_of(status: int) -> str:
    """A bounded label for a response status."""
    if status < 300:
        return "accepted" if status == 202 else "success"
    if status == 429:
        return "rate_limited"
    if status == 499:
        return "cancelled"
    if status == 504:
        return "timeout"
    if status < 500:
        return "client_error"
    return "error"


def error_outcome(error: GatewayError) -> str | None:
    """The outcome of an error answer where its status alone would mislabel it, else ``None``."""
    return THROTTLED if isinstance(error, RateLimited) else None


def deferral_reason(path: str, tier_async: bool, mode: str | None) -> str:
    """Why a request went to the queue: a bounded label from the path and the mode it was decided under.

    ``async`` is the client's ``Prefer: respond-async`` or an async tier; a held
    request in ``normal`` mode can only have been deferred because no slot was free.
    """
    if path == "async":
        return "async_tier" if tier_async else "requested"
    return "saturated" if mode in (None, "normal") else "mode"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
        PlatformCollector(registry=r)  # python_info
        self.catalog: list[MetricInfo] = []
        # The fixed names of DESIGN.md §3.
        self.requests = self._counter(
            "gateway_requests_total", "Requests answered by the gateway, by outcome (a bounded class of the status).",
            ["tier", "model", "route", "outcome"],
        )
        self.request_duration = self._histogram(
            "gateway_request_duration_seconds", "Time from receiving a request to the end of its response.",
            ["tier", "route"], LATENCY_BUCKETS,
        )
        self.upstream_requests = self._counter(
            "gateway_upstream_requests_total", "Upstream attempts (retries and fallbacks each count), by status class.",
            ["provider", "model", "status_class"],
        )
        self.upstream_duration = self._histogram(
            "gateway_upstream_duration_seconds", "Upstream attempt latency (to the first event for streams).",
            ["provider"], LATENCY_BUCKETS,
        )
        self.ttft = self._histogram(
            "gateway_time_to_first_token_seconds", "Upstream time to the first streamed event.", ["provider"], TTFT_BUCKETS
        )
        self.inflight = self._gauge("gateway_inflight", "Synchronous requests being served now, by tier.", ["tier"])
        self.queue_depth = self._gauge(
            "gateway_queue_depth", "Jobs in the tier's queue, waiting or running (refreshed every 2 s).", ["tier"]
        )
        self.queue_oldest_age = self._gauge(
            "gateway_queue_oldest_age_seconds", "Age of the oldest job in the tier's queue (0 when empty).", ["tier"]
        )
        self.jobs = self._counter(
            "gateway_jobs_total", "Deferred jobs that reached a terminal status, by the path that served them.",
            ["tier", "via", "status"],
        )
        self.provider_batches_inflight = self._gauge(
            "gateway_provider_batches_inflight", "Provider batch jobs submitted and not yet finished.", ["provider"]
        )
        self.mode = self._gauge(
            "gateway_mode", "1 for the effective mode of each scope (global, or a provider), 0 for the others.",
            ["scope", "mode"],
        )
        self.mode_transitions = self._counter(
            "gateway_mode_transitions_total", "Mode changes, by who made them (the controller or an operator).",
            ["scope", "from_mode", "to_mode", "source"],
        )
        self.fallbacks = self._counter(
            "gateway_fallbacks_total", "Moves from one target of a model to the next.", ["model", "from_target", "to_target"]
        )
        self.circuit_open = self._gauge(
            "gateway_circuit_open", "1 while any target circuit of the provider is open.", ["provider"]
        )
        self.tokens = self._counter(
            "gateway_tokens_total", "Tokens metered from upstream usage, by direction and price list.",
            ["provider", "model", "direction", "pricing"],
        )
        self.cost = self._counter(
            "gateway_cost_usd_total", "Spend in US dollars at the price actually paid.", ["provider", "model", "pricing"]
        )
        # Added by the observability issue.
        self.cost_baseline = self._counter(
            "gateway_cost_baseline_usd_total",
            "What the same usage would have cost at realtime prices; minus gateway_cost_usd_total, the savings.",
            ["provider", "model", "pricing"],
        )
        self.metered = self._counter(
            "gateway_metered_requests_total", "Served requests and jobs whose usage was metered (cost per request).",
            ["provider", "model", "pricing"],
        )
        self.deferrals = self._counter(
            "gateway_deferrals_total", "Requests handed to the queue, by reason (requested, async_tier, mode, saturated).",
            ["tier", "reason"],
        )
        self.dead_letters = self._gauge(
            "gateway_dead_letters", "Jobs in the dead-letter stream (failed max_attempts times; refreshed every 2 s).", []
        )
        self.tier_max_delay = self._gauge(
            "gateway_tier_max_delay_seconds", "The tier's configured max_delay_s: a queued job expires past it.", ["tier"]
        )
        self.threshold_p95 = self._gauge(
            "gateway_degradation_p95_latency_threshold_seconds",
            "Configured upstream p95 latency that enters (or exits, or sheds) a degraded mode.", ["edge"],
        )
        self.threshold_rate_limited = self._gauge(
            "gateway_degradation_rate_limited_ratio_threshold",
            "Configured upstream 429 ratio that enters (or exits, or sheds) a degraded mode.", ["edge"],
        )
        self.threshold_error = self._gauge(
            "gateway_degradation_error_ratio_threshold",
            "Configured upstream error ratio (5xx, timeouts, connection errors) for each mode edge.", ["edge"],
        )
        self.loop_lag = self._histogram(
            "gateway_event_loop_lag_seconds", "How late the event loop woke a periodic sleeper: time it was blocked.",
            [], LOOP_LAG_BUCKETS,
        )
        self.build_info = self._gauge("gateway_build_info", "Always 1; the version of the running gateway.", ["version"])
        self.build_info.labels(__version__).set(1)
        self._known_models: frozenset[str] | None = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def _declare(self, kind: str, name: str, help: str, labels: list[str]) -> None:
        self.catalog.append(MetricInfo(name, kind, tuple(labels), help))

    def _counter(self, name: str, help: str, labels: list[str]) -> Counter:
        self._declare("counter", name, help, labels)
        return Counter(name, help, labels, registry=self.registry)

    def _gauge(self, name: str, help: str, labels: list[str]) -> Gauge:
        self._declare("gauge", name, help, labels)
        return Gauge(name, help, labels, registry=self.registry)

    def _histogram(self, name: str, help: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
        self._declare("histogram", name, help, labels)
        return Histogram(name, help, labels, buckets=buckets, registry=self.registry)

    def prime(self, config: Config) -> None:
        """Export what the config fixes, and zero the per-tier and per-provider gauges.

        Panels and alert rules then find their series from the first scrape,
        instead of "no data" until the first event of each kind.
        """
        self._known_models = frozenset(config.models)
        for name, tier in config.tiers.items():
            self._child(self.inflight, name).set(0)
            self.queue_depth.labels(name).set(0)
            self.queue_oldest_age.labels(name).set(0)
            self.tier_max_delay.labels(name).set(tier.max_delay_s)
        for name in config.providers:
            self.circuit(name, False)
            self.provider_batches_inflight.labels(name).set(0)
        d = config.degradation
        edges = {"enter": d.enter, "exit": d.exit, **({"shed": d.shed} if d.shed is not None else {})}
        for edge, t in edges.items():
            self.threshold_p95.labels(edge).set(t.p95_latency_s)
            self.threshold_rate_limited.labels(edge).set(t.rate_limited_ratio)
            self.threshold_error.labels(edge).set(t.error_ratio)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(
        self, tier: str, model: str, route: str, status: int, duration_s: float, outcome: str | None = None
    ) -> None:
        if self._known_models is not None and model not in self._known_models:
            model = UNKNOWN_MODEL  # a 404 for a made-up name must not add a series
        self._child(self.requests, tier, model, route, outcome or outcome_of(status)).inc()
        self._child(self.request_duration, tier, route).observe(duration_s)

    def inflight_child(self, tier: str) -> Any:
        return self._child(self.inflight, tier)

    def upstream(self, outcome: Outcome) -> None:
        self._child(self.upstream_requests, outcome.provider, outcome.model, outcome.status_class).inc()
        self._child(self.upstream_duration, outcome.provider).observe(outcome.latency_s)
        if outcome.ttft_s is not None:
            self._child(self.ttft, outcome.provider).observe(outcome.ttft_s)

    def fallback(self, model: str, from_target: str, to_target: str) -> None:
        self._child(self.fallbacks, model, from_target, to_target).inc()

    def circuit(self, provider: str, is_open: bool) -> None:
        self._child(self.circuit_open, provider).set(1 if is_open else 0)

    def usage(
        self, provider: str, model: str, pricing: str, input_tokens: int, output_tokens: int, cost_usd: float,
        baseline_usd: float | None = None,
    ) -> None:
        """Meter one served request; ``baseline_usd`` is its realtime price when it was paid at another."""
        self._child(self.tokens, provider, model, "input", pricing).inc(input_tokens)
        self._child(self.tokens, provider, model, "output", pricing).inc(output_tokens)
        self._child(self.cost, provider, model, pricing).inc(cost_usd)
        self._child(self.cost_baseline, provider, model, pricing).inc(cost_usd if baseline_usd is None else baseline_usd)
        self._child(self.metered, provider, model, pricing).inc()

    def deferral(self, tier: str, reason: str) -> None:
        self._child(self.deferrals, tier, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
