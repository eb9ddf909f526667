"""The simulator's fault decision: realtime calls see the configured 429 and error ratios; batch items see errors only."""

from __future__ import annotations

import pytest

from gateway.config import SimulatorConfig
from gateway.providers.simulator import Simulator


@pytest.mark.parametrize(
    ("rate_limited", "errors", "batch", "expected"),
    [
        (1.0, 0.0, False, {429}),
        (1.0, 0.0, True, {200}),  # a realtime 429 storm does not touch the batch API's own quota
        (0.0, 1.0, False, {500}),
        (0.0, 1.0, True, {500}),
        (0.5, 0.5, True, {200, 500}),
        (0.0, 0.0, False, {200}),
    ],
)
def test_fault(rate_limited: float, errors: float, batch: bool, expected: set[int]) -> None:
    sim = Simulator(SimulatorConfig(rate_limited_ratio=rate_limited, error_ratio=errors), seed=1)
    seen = {sim.fault(batch=batch).status for _ in range(200)}
    assert seen == expected


def test_batch_lines_under_a_storm_all_succeed() -> None:
    sim = Simulator(SimulatorConfig(rate_limited_ratio=0.9, latency_ms=0), seed=2)
    lines = [{"custom_id": f"j{i}", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}} for i in range(50)]
    out, err = sim.run_batch("chat/completions", lines)
    assert len(out) == 50 and err == []
