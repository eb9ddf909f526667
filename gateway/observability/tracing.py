"""Traces: OpenTelemetry spans per request and per upstream attempt, GenAI conventions.

Off unless the standard ``OTEL_*`` variables ask for export (an OTLP endpoint,
or ``OTEL_TRACES_EXPORTER``). Off means ``enabled`` is False and the SDK is
never imported: the hot path pays one attribute check. Trace context crosses
the queue as a W3C ``traceparent`` stored on the job; the worker's spans link
back to the enqueuing request, provider batches included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# gen_ai.provider.name values from the semantic conventions, by provider kind.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "simulator": "gateway.simulator"}


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces, per the OTel SDK's variables."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracing:
    """The gateway's tracer; build with ``from_env`` or hand it a ``TracerProvider`` (tests)."""

    def __init__(self, provider: Any = None) -> None:
        self.enabled = provider is not None
        self.provider = provider
        if provider is not None:
            from opentelemetry import context, propagate, trace
            from opentelemetry.trace import Link, SpanKind, Status, StatusCode

            self._trace, self._context, self._propagate = trace, context, propagate
            self._Link, self._Kind, self._Status, self._Code = Link, SpanKind, Status, StatusCode
            self.tracer = provider.get_tracer("gateway")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tracing:
        env = os.environ if env is None else env
        if not wanted(env):
            return cls()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
        if exporter_name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter: Any = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "gateway")})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    # -- spans; callers check ``enabled`` first so the off path builds nothing

    def server_span(self, method: str, path: str, carrier: Mapping[str, str]) -> Any:
        parent = self._propagate.extract(carrier)
        return self.tracer.start_span(f"{method} {path}", context=parent, kind=self._Kind.SERVER,
                                      attributes={"http.request.method": method, "url.path": path})

    def current(self) -> Any:
        return self._trace.get_current_span()

    def end_server(self, span: Any, status: int, tier: str, mode: str | None, target: str | None,
                   attempts: int) -> None:
        """Finish a request's server span with what the gateway decided (only a server span is ended)."""
        if getattr(span, "kind", None) is not self._Kind.SERVER or not span.is_recording():
            return
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("gateway.tier", tier)
        span.set_attribute("gateway.attempts", attempts)
        if mode:
            span.set_attribute("gateway.mode", mode)
        if target:
            span.set_attribute("gateway.target", target)
        if status >= 500:
            self.fail(span, str(status))
        span.end()

    def activate(self, span: Any) -> Any:
        """Make ``span`` current; returns a token for ``deactivate``."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def deactivate(self, token: Any) -> None:
        self._context.detach(token)

    def attempt_span(self, route: str, provider_kind: str, target_model: str, base_url: str | None,
                     attempt: int, stage: int) -> Any:
        op = OPERATIONS.get(route, route)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": PROVIDER_NAMES.get(provider_kind, provider_kind),
            "gen_ai.request.model": target_model,
            "gateway.attempt": attempt,
            "gateway.fallback_stage": stage,
        }
        if base_url:
            from urllib.parse import urlsplit

            parts = urlsplit(base_url)
            if parts.hostname:
                attrs["server.address"] = parts.hostname
                attrs["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        return self.tracer.start_span(f"{op} {target_model}", kind=self._Kind.CLIENT, attributes=attrs)

    def job_span(self, name: str, traceparent: str, attrs: dict[str, Any]) -> Any:
        """A worker span in its own trace, linked to the request that enqueued the job."""
        links = []
        if traceparent:
            ctx = self._trace.get_current_span(self._propagate.extract({"traceparent": traceparent})).get_span_context()
            if ctx.is_valid:
                links.append(self._Link(ctx, {"gateway.link": "enqueued_by"}))
        return self.tracer.start_span(name, kind=self._Kind.CONSUMER, links=links, attributes=attrs,
                                      context=self._context.Context())

    def traceparent(self) -> str:
        """The current span as a W3C traceparent, for storing on a job."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return carrier.get("traceparent", "")

    def fail(self, span: Any, error_type: str, message: str = "") -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(self._Status(self._Code.ERROR, message))

    def event(self, name: str, attrs: dict[str, Any]) -> None:
        """A span event on the current span, or on a short span of its own when there is none."""
        current = self._trace.get_current_span()
        if current.is_recording():
            current.add_event(name, attrs)
            return
        with self.tracer.start_as_current_span(name) as span:
            span.add_event(name, attrs)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
