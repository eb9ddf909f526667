"""The staged-fallback decisions: ``next_step`` and ``backoff_s`` as tables, and how failures are reported."""

from __future__ import annotations

import pytest

from gateway.errors import AttemptFailed, CircuitOpen, UpstreamError, UpstreamRejected, UpstreamTimeout
from gateway.router import BACKOFF_CAP_S, MIN_ATTEMPT_S, Outcome, Router, Step, backoff_s, next_step


@pytest.mark.parametrize(
    "tries,rand,expected",
    [
        (1, 0.0, 0.125),  # first retry: half of the 0.25 s step at the lowest jitter...
        (1, 1.0, 0.25),  # ...up to the whole step
        (1, 0.5, 0.1875),
        (2, 1.0, 0.5),  # doubling per try
        (3, 1.0, 1.0),
        (4, 0.0, 1.0),
        (0, 1.0, 0.25),  # never below the first step
        (10, 1.0, BACKOFF_CAP_S),  # capped
        (60, 0.0, BACKOFF_CAP_S / 2),  # capped, still jittered; no overflow for large counts
    ],
)
def test_backoff_s(tries, rand, expected):
    assert backoff_s(tries, rand) == pytest.approx(expected)


@pytest.mark.parametrize("tries", [1, 2, 3, 5, 8])
def test_backoff_jitter_stays_within_half_and_whole_step(tries):
    low, high = backoff_s(tries, 0.0), backoff_s(tries, 1.0)
    assert low == pytest.approx(high / 2)
    assert low <= backoff_s(tries, 0.37) <= high


@pytest.mark.parametrize(
    "retryable,retry_after,tries,retries,remaining,rand,step,delay",
    [
        # permanent failures are given up at once, whatever the budget
        (False, None, 1, 3, 30.0, 0.5, Step.GIVE_UP, 0.0),
        (False, 1.0, 1, 3, 30.0, 0.5, Step.GIVE_UP, 0.0),
        # retryable with retries left: retry after the jittered backoff
        (True, None, 1, 1, 30.0, 1.0, Step.RETRY, 0.25),
        (True, None, 1, 2, 30.0, 0.0, Step.RETRY, 0.125),
        (True, None, 2, 2, 30.0, 1.0, Step.RETRY, 0.5),
        # retries used up: stage 2, the next target, without waiting
        (True, None, 2, 1, 30.0, 1.0, Step.NEXT_TARGET, 0.0),
        (True, None, 1, 0, 30.0, 1.0, Step.NEXT_TARGET, 0.0),
        (True, 5.0, 3, 2, 30.0, 1.0, Step.NEXT_TARGET, 0.0),
        # Retry-After is honoured when longer than the backoff...
        (True, 2.0, 1, 1, 30.0, 1.0, Step.RETRY, 2.0),
        # ...and the backoff wins when the hint is shorter
        (True, 0.01, 2, 3, 30.0, 1.0, Step.RETRY, 0.5),
        (True, 0.0, 1, 1, 30.0, 1.0, Step.RETRY, 0.25),
        # a wait that would not leave time for an attempt moves on to the next target instead
        (True, 60.0, 1, 3, 30.0, 1.0, Step.NEXT_TARGET, 0.0),
        (True, 1.0, 1, 3, 1.0, 1.0, Step.NEXT_TARGET, 0.0),
        (True, None, 1, 3, 0.2, 1.0, Step.NEXT_TARGET, 0.0),
        (True, None, 1, 3, 0.31, 1.0, Step.RETRY, 0.25),
        # no time left at all: give up
        (True, None, 1, 3, MIN_ATTEMPT_S, 1.0, Step.GIVE_UP, 0.0),
        (True, None, 9, 1, 0.0, 1.0, Step.GIVE_UP, 0.0),
        (True, None, 1, 1, -1.0, 1.0, Step.GIVE_UP, 0.0),
    ],
)
def test_next_step(retryable, retry_after, tries, retries, remaining, rand, step, delay):
    assert next_step(retryable, retry_after, tries, retries, remaining, rand) == (step, pytest.approx(delay))


@pytest.mark.parametrize(
    "status,timeout,expected",
    [(200, False, "2xx"), (429, False, "429"), (500, False, "5xx"), (503, False, "5xx"), (404, False, "4xx"),
     (None, False, "error"), (None, True, "timeout"), (200, True, "timeout")],
)
def test_outcome_status_class(status, timeout, expected):
    assert Outcome("p", "m", status, timeout, 0.1).status_class == expected


@pytest.mark.parametrize(
    "failure,kind,status",
    [
        (AttemptFailed("x", retryable=True, upstream_status=500), UpstreamError, 502),
        (AttemptFailed("x", retryable=True), UpstreamError, 502),  # connection error
        (AttemptFailed("x", retryable=True, timeout=True), UpstreamTimeout, 504),
        (AttemptFailed("x", retryable=False, upstream_status=422), UpstreamRejected, 422),
        (AttemptFailed("x", retryable=False, upstream_status=401), UpstreamRejected, 401),
        (AttemptFailed("x", retryable=True, upstream_status=429), UpstreamError, 502),
    ],
)
def test_final_error_names_the_attempts(failure, kind, status):
    error = Router._final(failure, 3)
    assert type(error) is kind
    assert error.status == status
    assert error.headers["X-Gateway-Attempts"] == "3"


def test_final_keeps_a_gateway_side_error():
    error = Router._final(CircuitOpen("all open", headers={"Retry-After": "2"}), 0)
    assert isinstance(error, CircuitOpen) and error.status == 503
    assert error.headers == {"Retry-After": "2", "X-Gateway-Attempts": "0"}
