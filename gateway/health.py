"""Health monitor: a sliding window of upstream outcomes per provider and per target.

The window is a ring of one-second slices. Each slice counts attempts, 429s,
errors and timeouts, and keeps a sparse log-spaced latency histogram (10%
wide buckets, so a p95 read from it is within 10% of the truth). Memory is
bounded by ``window_s`` slices times a fixed bucket count, whatever the traffic.

Slices are plain counters, so they add: every replica flushes its new counts
to Redis each second, and the controller reads the sum over all replicas, which
is how all replicas reach the same decision. ``figures`` is a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.router import Outcome

_LOG_BASE = math.log(1.1)
_MIN_S = 0.001


def bucket_of(latency_s: float) -> int:
    """Index of the 10%-wide bucket holding ``latency_s`` (bucket 0 holds everything under 1 ms)."""
    if latency_s <= _MIN_S:
        return 0
    return int(math.log(latency_s / _MIN_S) / _LOG_BASE) + 1


def bucket_upper_s(index: int) -> float:
    return _MIN_S * math.exp(index * _LOG_BASE)


@dataclass(slots=True)
class Slice:
    """Counts for one second of one scope. Fields add across replicas."""

    n: int = 0
    rate_limited: int = 0
    errors: int = 0
    timeouts: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.n += 1
        if outcome.status == 429:
            self.rate_limited += 1
        elif outcome.timeout:
            self.timeouts += 1
            self.errors += 1
        elif outcome.status is None or outcome.status >= 500:
            self.errors += 1
        if outcome.status != 429:
            b = bucket_of(outcome.latency_s)
            self.latency[b] = self.latency.get(b, 0) + 1
        if outcome.ttft_s is not None:
            b = bucket_of(outcome.ttft_s)
            self.ttft[b] = self.ttft.get(b, 0) + 1

    def merge(self, other: Slice) -> None:
        self.n += other.n
        self.rate_limited += other.rate_limited
        self.errors += other.errors
        self.timeouts += other.timeouts
        for b, c in other.latency.items():
            self.latency[b] = self.latency.get(b, 0) + c
        for b, c in other.ttft.items():
            self.ttft[b] = self.ttft.get(b, 0) + c

    def to_fields(self) -> dict[str, int]:
        out = {"n": self.n, "rl": self.rate_limited, "err": self.errors, "to": self.timeouts}
        out.update({f"l{b}": c for b, c in self.latency.items()})
        out.update({f"t{b}": c for b, c in self.ttft.items()})
        return out

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Slice:
        s = cls()
        for k, v in fields.items():
            key, count = k.decode(), int(v)
            if key == "n":
                s.n = count
            elif key == "rl":
                s.rate_limited = count
            elif key == "err":
                s.errors = count
            elif key == "to":
                s.timeouts = count
            elif key[0] == "l":
                s.latency[int(key[1:])] = count
            elif key[0] == "t":
                s.ttft[int(key[1:])] = count
        return s


def quantile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of a bucket histogram, interpolated inside the bucket."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        c = hist[b]
        if seen + c >= rank:
            lo = bucket_upper_s(b - 1) if b > 0 else 0.0
            hi = bucket_upper_s(b)
            return lo + (hi - lo) * ((rank - seen) / c)
        seen += c
    return bucket_upper_s(max(hist))


@dataclass(frozen=True, slots=True)
class Figures:
    samples: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    ttft_p95_s: float | None = None
    rate_limited_ratio: float = 0.0
    error_ratio: float = 0.0
    timeout_ratio: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "samples": self.samples, "p50_latency_s": r(self.p50_s), "p95_latency_s": r(self.p95_s),
            "ttft_p95_s": r(self.ttft_p95_s), "rate_limited_ratio": r(self.rate_limited_ratio),
            "error_ratio": r(self.error_ratio), "timeout_ratio": r(self.timeout_ratio),
        }


def figures(slices: Iterable[Slice]) -> Figures:
    total = Slice()
    for s in slices:
        total.merge(s)
    if total.n == 0:
        return Figures()
    return Figures(
        samples=total.n,
        p50_s=quantile(total.latency, 0.50),
        p95_s=quantile(total.latency, 0.95),
        ttft_p95_s=quantile(total.ttft, 0.95),
        rate_limited_ratio=total.rate_limited / total.n,
        error_ratio=total.errors / total.n,
        timeout_ratio=total.timeouts / total.n,
    )


class Window:
    """This process's slices per scope (``provider`` and ``provider/model``), over ``window_s`` seconds.

    ``pending`` holds counts not yet flushed to Redis; ``local`` keeps the
    whole window here too, so a gateway without Redis still has figures.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = int(max(window_s, 1))
        self.local: dict[str, dict[int, Slice]] = {}
        self._trimmed = 0  # the second last trimmed at: trimming once a second is enough
        self.pending: dict[str, dict[int, Slice]] = {}

    def observe(self, outcome: Outcome, now: float) -> None:
        sec = int(now)
        for scope in (outcome.provider, f"{outcome.provider}/{outcome.model}"):
            for store in (self.local, self.pending):
                slices = store.setdefault(scope, {})
                s = slices.get(sec)
                if s is None:
                    s = slices[sec] = Slice()
                s.add(outcome)
        if sec != self._trimmed:
            self._trim(sec)
            self._trimmed = sec

    def _trim(self, sec: int) -> None:
        oldest = sec - self.window_s
        for slices in self.local.values():
            if len(slices) > self.window_s:
                for key in [k for k in slices if k <= oldest]:
                    del slices[key]

    def take_pending(self) -> dict[str, dict[int, Slice]]:
        pending, self.pending = self.pending, {}
        return pending

    def local_figures(self, scope: str, now: float) -> Figures:
        oldest = int(now) - self.window_s
        return figures(s for sec, s in self.local.get(scope, {}).items() if sec > oldest)
