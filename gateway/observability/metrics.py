"""Prometheus metrics: the fixed names of DESIGN.md §3, with children bound once.

Each ``Metrics`` owns its own registry (no module-level state), so several
gateways can live in one process, as they do in tests. Label children are
cached in dicts because ``labels()`` costs far more than ``inc()`` on the hot path.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector

from gateway.router import Outcome

# LLM latencies run from a few milliseconds (cached, embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "gateway_requests_total", "Requests answered, by outcome.", ["tier", "model", "route", "outcome"], registry=r
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time from request to the end of the response.", ["tier", "route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total", "Upstream attempts, by status class.", ["provider", "model", "status_class"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Upstream attempt latency (to the first token for streams).", ["provider"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Upstream time to the first streamed event.", ["provider"],
            buckets=TTFT_BUCKETS, registry=r,
        )
        self.inflight = Gauge("gateway_inflight", "Requests in flight, by tier.", ["tier"], registry=r)
        self.queue_depth = Gauge("gateway_queue_depth", "Jobs waiting in the queue, by tier.", ["tier"], registry=r)
        self.queue_oldest_age = Gauge(
            "gateway_queue_oldest_age_seconds", "Age of the oldest waiting job, by tier.", ["tier"], registry=r
        )
        self.jobs = Counter("gateway_jobs_total", "Jobs that reached a terminal state.", ["tier", "via", "status"], registry=r)
        self.provider_batches_inflight = Gauge(
            "gateway_provider_batches_inflight", "Provider batch jobs submitted and not yet finished.", ["provider"], registry=r
        )
        self.mode = Gauge("gateway_mode", "1 for the active mode of each scope.", ["scope", "mode"], registry=r)
        self.mode_transitions = Counter(
            "gateway_mode_transitions_total", "Mode changes.", ["scope", "from_mode", "to_mode", "source"], registry=r
        )
        self.fallbacks = Counter(
            "gateway_fallbacks_total", "Moves from one target to the next.", ["model", "from_target", "to_target"], registry=r
        )
        self.circuit_open = Gauge("gateway_circuit_open", "1 while any target circuit of the provider is open.", ["provider"], registry=r)
        self.tokens = Counter(
            "gateway_tokens_total", "Tokens metered.", ["provider", "model", "direction", "pricing"], registry=r
        )
        self.cost = Counter("gateway_cost_usd_total", "Spend in US dollars.", ["provider", "model", "pricing"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, tier: str, model: str, route: str, status: int, duration_s: float) -> None:
        self._child(self.requests, tier, model, route, outcome_of(status)).inc()
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

    def usage(self, provider: str, model: str, pricing: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self._child(self.tokens, provider, model, "input", pricing).inc(input_tokens)
        self._child(self.tokens, provider, model, "output", pricing).inc(output_tokens)
        self._child(self.cost, provider, model, pricing).inc(cost_usd)

    def render(self) -> bytes:
        return generate_latest(self.registry)
