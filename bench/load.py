"""A load run: what to send (``LoadSpec``) and what came back (``LoadResult``).

Two drivers implement ``run(spec) -> LoadResult``: ``bench.wrk`` (Debian's wrk,
preferred) and ``bench.loadgen`` (a built-in asyncio client for machines without
wrk). The scenarios do not care which one ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bench.payloads import CHAT_BODY, CHAT_PATH, headers


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    connections: int
    duration_s: float
    path: str = CHAT_PATH
    body: bytes = CHAT_BODY
    headers: dict[str, str] = field(default_factory=headers)

    @property
    def url(self) -> str:
        return self.base_url + self.path


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # socket errors, timeouts and HTTP statuses >= 400

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1)}


class Driver(Protocol):
    name: str

    def version(self) -> str: ...

    def run(self, spec: LoadSpec) -> LoadResult: ...


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]
