"""How long and how hard each scenario runs: the full plan (under 5 minutes) and the smoke plan (seconds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    connections: tuple[int, ...]  # sync scenario connection counts
    warmup_s: float  # untimed load before each timed sync run (0: none)
    duration_s: float  # each timed run (wrk takes whole seconds)
    rounds: int  # sync rows: timed runs per target and connection count; the median one is reported
    stream_requests: int  # timed streams per target
    stream_warmup: int
    profile_s: int  # py-spy sampling time per profiled process
    memory_requests: int  # requests between the two RSS readings
    memory_warmup_s: float  # load before the first RSS reading
    memory_chunk_s: float  # the memory load runs in chunks this long until enough requests are done
    memory_connections: int
    memory_max_s: float  # stop the memory load after this long even if fewer requests were done (5-minute budget)
    first_token_ms: float = 2.0  # fake upstream stream shape
    chunk_ms: float = 1.0
    chunks: int = 16

    @classmethod
    def full(cls) -> Plan:
        return cls(
            name="full", connections=(1, 16, 64), warmup_s=1, duration_s=2, rounds=3,
            stream_requests=200, stream_warmup=20, profile_s=10,
            memory_requests=100_000, memory_warmup_s=3, memory_chunk_s=5, memory_connections=16,
            memory_max_s=120,
        )

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            name="smoke", connections=(1, 16, 64), warmup_s=0, duration_s=1, rounds=1,
            stream_requests=10, stream_warmup=2, profile_s=1,
            memory_requests=1_000, memory_warmup_s=1, memory_chunk_s=1, memory_connections=16,
            memory_max_s=10,
        )
