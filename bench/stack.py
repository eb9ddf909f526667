"""The running system under test: Redis, the fake upstream, the bare forwarder and the gateway.

A ``Stack`` starts them in order and stops every process it started, in
reverse order, however the run ends. Scenarios that need a process of their
own (a fresh gateway, LiteLLM) start it through ``spawn`` so it is cleaned up
the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType

from bench import gateway_config, services
from bench.plan import Plan
from bench.services import Service


class Stack:
    def __init__(self, plan: Plan, logs: Path) -> None:
        self.plan = plan
        self.logs = logs
        self._exit = contextlib.ExitStack()
        self.redis: Service | None = None
        self.upstream: Service | None = None
        self.forwarder: Service | None = None
        self.gateway: Service | None = None

    def __enter__(self) -> Stack:
        try:
            self.redis = self.spawn(services.redis(self.logs))
            self.upstream = self.spawn(
                services.upstream(self.logs, self.plan.first_token_ms, self.plan.chunk_ms, self.plan.chunks)
            )
            self.forwarder = self.spawn(services.forwarder(self.logs, self.upstream.url))
            self.gateway = self.spawn(services.gateway(self.logs, "gateway", self.gateway_config()))
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit.close()

    def redis_url(self, db: int = 0) -> str:
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def gateway_config(self, *, redis_db: int = 0) -> dict[str, object]:
        """The production config; a scenario with its own queue traffic uses its own Redis database."""
        assert self.upstream is not None
        return gateway_config.production(self.upstream.url, self.redis_url(redis_db))

    def spawn(self, service: Service) -> Service:
        """Start ``service`` now; stop it when the stack closes (or earlier, through ``retire``)."""
        service.start()
        self._exit.callback(service.stop)
        return service

    def retire(self, service: Service) -> None:
        """Stop a scenario's own process as soon as the scenario is done with it."""
        service.stop()

    def targets(self) -> dict[str, Service]:
        """The sync-path rows, in table order."""
        assert self.upstream and self.forwarder and self.gateway
        return {"direct": self.upstream, "forwarder": self.forwarder, "gateway": self.gateway}
