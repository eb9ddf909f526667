"""The per-target circuit breaker as a table of event sequences against a fake clock."""

from __future__ import annotations

import pytest

from gateway.circuit import Circuit, CircuitState

CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def run(circuit: Circuit, events: list[tuple[str, float]]) -> list[object]:
    """Apply (event, time) pairs; ``allow`` events record whether the call was let through."""
    seen: list[object] = []
    for event, now in events:
        if event == "allow":
            seen.append(circuit.allow(now))
        elif event == "fail":
            circuit.failure(now)
        elif event == "ok":
            circuit.success()
        elif event == "abandon":
            circuit.abandon()
        else:  # pragma: no cover - a typo in the table
            raise AssertionError(event)
    return seen


@pytest.mark.parametrize(
    "events,allowed,state",
    [
        # closed lets everything through
        ([("allow", 0), ("allow", 1)], [True, True], CLOSED),
        # fewer failures than the threshold keep it closed
        ([("fail", 0), ("fail", 1), ("allow", 2)], [True], CLOSED),
        # a success in between resets the count: failures must be consecutive
        ([("fail", 0), ("fail", 1), ("ok", 2), ("fail", 3), ("fail", 4), ("allow", 5)], [True], CLOSED),
        # the threshold opens it; calls are refused during the cooldown
        ([("fail", 0), ("fail", 1), ("fail", 2), ("allow", 2), ("allow", 11.9)], [False, False], OPEN),
        # after the cooldown exactly one probe goes through
        ([("fail", 0), ("fail", 1), ("fail", 2), ("allow", 12), ("allow", 12.1), ("allow", 30)], [True, False, False],
         HALF),
        # a successful probe closes it
        ([("fail", 0), ("fail", 0), ("fail", 0), ("allow", 10), ("ok", 10.5), ("allow", 10.6), ("allow", 10.7)],
         [True, True, True], CLOSED),
        # a failed probe opens it again, with a fresh cooldown from the failure
        ([("fail", 0), ("fail", 0), ("fail", 0), ("allow", 10), ("fail", 11), ("allow", 20), ("allow", 21)],
         [True, False, True], HALF),
        # a probe that ended without a verdict lets the next caller probe at once
        ([("fail", 0), ("fail", 0), ("fail", 0), ("allow", 10), ("abandon", 10), ("allow", 10.1), ("allow", 10.2)],
         [True, True, False], HALF),
        # abandoning while closed or open changes nothing
        ([("abandon", 0), ("allow", 0)], [True], CLOSED),
        ([("fail", 0), ("fail", 0), ("fail", 0), ("abandon", 1), ("allow", 2)], [False], OPEN),
        # after closing, the count starts again from zero
        ([("fail", 0), ("fail", 0), ("fail", 0), ("allow", 10), ("ok", 10), ("fail", 11), ("fail", 12), ("allow", 13)],
         [True, True], CLOSED),
    ],
)
def test_transitions(events, allowed, state):
    circuit = Circuit(threshold=3, cooldown_s=10.0)
    assert run(circuit, events) == allowed
    assert circuit.state is state


@pytest.mark.parametrize(
    "events,now,expected",
    [
        ([], 5.0, 0.0),
        ([("fail", 0), ("fail", 0), ("fail", 2)], 2.0, 10.0),
        ([("fail", 0), ("fail", 0), ("fail", 2)], 9.0, 3.0),
        ([("fail", 0), ("fail", 0), ("fail", 2)], 50.0, 0.0),
    ],
)
def test_retry_in(events, now, expected):
    circuit = Circuit(threshold=3, cooldown_s=10.0)
    run(circuit, events)
    assert circuit.retry_in(now) == pytest.approx(expected)


def test_threshold_one_opens_on_the_first_failure():
    circuit = Circuit(threshold=1, cooldown_s=0.5)
    circuit.failure(100.0)
    assert circuit.state is OPEN
    assert not circuit.allow(100.4)
    assert circuit.allow(100.5)
