"""Fixtures shared by every test: a private Redis, a fake upstream, live gateway processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway_proc import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream

CLIENT_KEY = "sk-test-web"
BATCH_KEY = "sk-test-batch"
ADMIN_KEY = "sk-test-admin"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


def base_config(upstream: FakeUpstream, redis_url: str, **overrides: Any) -> dict[str, Any]:
    """A config with two OpenAI-kind providers on the fake upstream and keyed clients."""
    config: dict[str, Any] = {
        "server": {"log_format": "json"},
        "redis": {"url": redis_url, "private": "never"},
        "auth": {
            "admin_keys": [{"name": "oncall", "key": ADMIN_KEY}],
            "clients": [
                {"name": "web", "key": CLIENT_KEY, "tiers": ["interactive", "standard"], "default_tier": "interactive"},
                {"name": "batch", "key": BATCH_KEY, "tiers": ["standard", "background"], "default_tier": "background"},
            ],
        },
        "providers": {
            "primary": {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-primary",
                        "max_concurrency": 8, "circuit": {"failure_threshold": 3, "cooldown_s": 1.0}},
            "secondary": {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-secondary",
                          "max_concurrency": 8},
        },
        "models": {
            "chat": {"targets": [{"provider": "primary", "model": "p-chat"}, {"provider": "secondary", "model": "s-chat"}],
                     "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "batch_discount": 0.5}},
            "embed": {"targets": [{"provider": "primary", "model": "p-embed"}]},
        },
        "tiers": {
            "interactive": {"priority": 0, "reserved_concurrency": 2, "timeout_s": 5, "first_byte_timeout_s": 2,
                            "retries": 1, "admission_timeout_s": 0.2},
            "standard": {"priority": 1, "reserved_concurrency": 1, "timeout_s": 10, "retries": 1,
                         "deferrable": True, "hold_s": 2, "admission_timeout_s": 0.2},
            "background": {"priority": 2, "async": True, "timeout_s": 10, "admission_timeout_s": 0.2},
        },
    }
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def make_module_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GatewayProcess]]:
    """Like ``make_gateway``, but the gateways live for the whole test module (start-ups cost about a second)."""
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any] | None, **kwargs: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path_factory.mktemp("gateway"), config, **kwargs).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def fallback_models(*names: str) -> dict[str, Any]:
    """Models ``NAME`` -> primary/p-NAME, then secondary/s-NAME: one circuit and one script per test."""
    return {
        name: {"targets": [{"provider": "primary", "model": f"p-{name}"}, {"provider": "secondary", "model": f"s-{name}"}]}
        for name in names
    }


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any] | None, **kwargs: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path, config, **kwargs).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
