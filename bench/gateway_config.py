"""The configurations under test: the gateway with its production settings, and LiteLLM.

Production settings means what a real deployment runs with: a client key is
required, requests go through tiers and admission, metrics are recorded, and
the access log is written (JSON, info level) for every request. Admission is
sized so that 64 benchmark connections never wait for a slot: the benchmark
measures overhead, not back-pressure.
"""

from __future__ import annotations

from typing import Any

from bench.payloads import ADMIN_KEY, CLIENT_KEY, MODEL, UPSTREAM_KEY

UPSTREAM_MODEL = "bench-upstream"


def production(upstream_url: str, redis_url: str) -> dict[str, Any]:
    return {
        "server": {"log_level": "info", "log_format": "json", "access_log": True, "shutdown_grace_s": 2},
        "redis": {"url": redis_url, "private": "never"},
        "auth": {
            "admin_keys": [{"name": "bench-oncall", "key": ADMIN_KEY}],
            "clients": [
                {"name": "bench", "key": CLIENT_KEY, "tiers": ["interactive", "standard", "background"],
                 "default_tier": "interactive"},
            ],
        },
        "providers": {
            "upstream": {"kind": "openai", "base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY,
                         "max_concurrency": 256},
        },
        "models": {
            MODEL: {"targets": [{"provider": "upstream", "model": UPSTREAM_MODEL}],
                    "pricing": {"input_per_mtok": 0.4, "output_per_mtok": 1.6, "batch_discount": 0.5}},
        },
        "tiers": {
            "interactive": {"priority": 0, "reserved_concurrency": 96, "timeout_s": 30, "first_byte_timeout_s": 10,
                            "retries": 1},
            "standard": {"priority": 1, "reserved_concurrency": 16, "timeout_s": 60, "retries": 2,
                         "deferrable": True, "hold_s": 15},
            "background": {"priority": 2, "async": True, "max_delay_s": 86400, "provider_batch": False},
        },
    }


def tracing_env(otlp_endpoint: str) -> dict[str, str]:
    """Tracing on, the standard OTel way: OTLP over HTTP to ``otlp_endpoint``."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_SERVICE_NAME": "gateway-bench",
    }


def litellm(upstream_url: str) -> dict[str, Any]:
    """LiteLLM's proxy in front of the same upstream, with a master key and no database."""
    return {
        "model_list": [
            {"model_name": MODEL,
             "litellm_params": {"model": f"openai/{UPSTREAM_MODEL}", "api_base": upstream_url + "/v1",
                                "api_key": UPSTREAM_KEY}},
        ],
        "general_settings": {"master_key": CLIENT_KEY},
        "litellm_settings": {"drop_params": True},
    }
