"""Sync non-streaming: req/s, p50 and p99 at each connection count, direct, via the bare forwarder, via the gateway.

Targets are interleaved per connection count, round after round, so a change
in background load hits all three rows of a comparison alike; each row is the
round with the median req/s (its p50 and p99 come from that same round).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import Section
from bench.scenarios import SYNC_COLUMNS, Context, load_problem, sync_row

ACCESS_LOGGER = b'"logger":"gateway.access"'


def run(ctx: Context) -> Section:
    section = Section("sync", "Sync, non-streaming", SYNC_COLUMNS)
    problems: list[str] = []
    for connections in ctx.plan.connections:
        rounds = ctx.rounds(ctx.stack.targets(), connections)
        rows: dict[str, dict[str, Any]] = {}
        for name, results in rounds.items():
            problem = load_problem(name, connections, *results)
            if problem:
                problems.append(problem)
            rows[name] = sync_row(name, connections, results)
        direct, forwarder = rows["direct"], rows["forwarder"]
        for row in rows.values():
            row["added_p50_ms"] = None if row is direct else row["p50_ms"] - direct["p50_ms"]
            if row["target"] == "gateway" and forwarder["rps"] > 0:
                row["vs_forwarder"] = round(row["rps"] / forwarder["rps"], 3)
            section.rows.append(row)
    assert ctx.stack.gateway is not None
    lines = access_lines(ctx.stack.gateway.log_path)
    section.notes.append(
        f"The gateway wrote {lines:,} access-log lines (JSON, info level) to {ctx.stack.gateway.log_path.name}."
    )
    if not lines:
        problems.append("the gateway wrote no access-log lines: production settings are not in effect")
    if problems:
        section.failed = "; ".join(problems)
    return section


def access_lines(log: Path) -> int:
    count = 0
    with open(log, "rb") as f:
        for line in f:
            if ACCESS_LOGGER in line:
                count += 1
    return count
