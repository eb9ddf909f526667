"""The scenarios of issue 8. Each module has ``run(ctx) -> Section``; a scenario that cannot
run here (a feature not built yet, a tool not installed) returns a skipped section."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.load import Driver, LoadResult, LoadSpec
from bench.payloads import headers
from bench.plan import Plan
from bench.services import Service
from bench.stack import Stack


@dataclass(frozen=True)
class Context:
    plan: Plan
    driver: Driver
    stack: Stack
    results: Path  # where the run's outputs go
    litellm: bool = False  # --litellm was given
    profile: bool = False  # --profile was given

    def load(
        self, service: Service, connections: int, extra_headers: dict[str, str] | None = None, warm: bool = True
    ) -> LoadResult:
        """Warm up (per the plan, unless ``warm`` is False), then one timed run against ``service``."""
        spec = LoadSpec(service.url, connections, self.plan.duration_s, headers=headers(extra_headers))
        if warm and self.plan.warmup_s:
            self.driver.run(replace(spec, duration_s=self.plan.warmup_s))
        return self.driver.run(spec)


    def rounds(self, services: dict[str, Service], connections: int) -> dict[str, list[LoadResult]]:
        """``plan.rounds`` timed runs of each service, interleaved (warm-up before the first round only)."""
        results: dict[str, list[LoadResult]] = {name: [] for name in services}
        for i in range(self.plan.rounds):
            for name, service in services.items():
                results[name].append(self.load(service, connections, warm=i == 0))
        return results


def median_round(results: list[LoadResult]) -> LoadResult:
    """The run with the median req/s (its latencies come with it)."""
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


SYNC_COLUMNS = (
    ("target", "target"),
    ("connections", "conns"),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("added_p50_ms", "added p50 ms (vs direct)"),
    ("vs_forwarder", "req/s vs forwarder"),
    ("errors", "errors"),
)


def sync_row(target: str, connections: int, results: list[LoadResult]) -> dict[str, Any]:
    """A table row from one or more runs: the median run, plus every run's req/s."""
    result = median_round(results)
    return {
        "target": target,
        "connections": connections,
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "mean_ms": result.mean_ms,
        "requests": result.requests,
        "duration_s": round(result.duration_s, 3),
        "errors": sum(r.errors for r in results),
        "rounds_rps": [round(r.rps, 1) for r in results],
    }


def load_problem(target: str, connections: int, *results: LoadResult) -> str | None:
    """Why load results cannot be trusted, if they cannot."""
    if any(r.requests == 0 for r in results):
        return f"{target} at {connections} connection(s) completed no requests"
    errors = sum(r.errors for r in results)
    if errors:
        return f"{target} at {connections} connection(s) had {errors} errors of {sum(r.requests for r in results)}"
    return None
