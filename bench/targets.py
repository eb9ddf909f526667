"""The targets of issue 8, as ratios and differences from the same run."""

from __future__ import annotations

from typing import Any

from bench.report import Report, TargetCheck


def _row(report: Report, section: str, **match: Any) -> dict[str, Any] | None:
    s = report.section(section)
    if s is None:
        return None
    return next((r for r in s.rows if all(r.get(k) == v for k, v in match.items())), None)


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    value = None if row is None else row.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(report: Report) -> list[TargetCheck]:
    """Every target whose scenario ran (or was skipped) in this run."""
    gateway16 = _get(_row(report, "sync", target="gateway", connections=16), "rps")
    forwarder16 = _get(_row(report, "sync", target="forwarder", connections=16), "rps")
    litellm16 = _get(_row(report, "litellm", target="litellm", connections=16), "rps")
    queued = "" if _row(report, "queue") else "queue not measured"
    memory = _row(report, "memory")
    short = memory is not None and memory["requests"] < memory["planned_requests"]
    checks = [
        ("sync", TargetCheck("gateway req/s / forwarder req/s at 16 conns", _ratio(gateway16, forwarder16),
                             0.5, "x", True)),
        ("sync", TargetCheck("added p50 at 1 conn (gateway - direct)",
                             _get(_row(report, "sync", target="gateway", connections=1), "added_p50_ms"),
                             0.5, "ms", False)),
        ("streaming", TargetCheck("added TTFT p50 (gateway - direct)",
                                  _get(_row(report, "streaming", target="gateway"), "added_ttft_p50_ms"),
                                  1.0, "ms", False)),
        ("memory", TargetCheck("RSS growth over the memory run", _get(memory, "growth_pct"), 10.0, "%", False,
                               f"after {memory['requests']:,} requests only" if memory and short else "")),
        ("litellm", TargetCheck("gateway req/s / LiteLLM req/s at 16 conns", _ratio(gateway16, litellm16),
                                40.0, "x", True, "" if litellm16 else "LiteLLM not measured")),
        ("queue", TargetCheck("enqueue rate", _get(_row(report, "queue", phase="enqueue (202)"), "jobs_per_s"),
                              2000.0, "jobs/s", True, queued)),
        ("queue", TargetCheck("drain rate", _get(_row(report, "queue", phase="drain"), "jobs_per_s"),
                              1000.0, "jobs/s", True, queued)),
    ]
    return [check for key, check in checks if report.section(key) is not None]
